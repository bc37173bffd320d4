/* The integer codes that cross between Python and the compiled core, defined here and
 * nowhere else: activations, losses of the output layer, element types of a data source,
 * and the slope of leaky relu. _vec.h switches on them; _ops.pxd re-exports them to
 * Cython (ACT_LINEAR_, ...); _kernels.pyx gives them to Python (nnfast._kernels.ACT_*,
 * LOSS_*, LEAKY_SLOPE), and nnfast/_names.py maps the public names to them.
 *
 * The order matters to the range checks: the hidden activations are the codes
 * 0..NNF_ACT_LAST_HIDDEN, softmax (an output only) comes after them. Model files store
 * names, not codes, so renumbering would break no file, only the code that reads these. */
#ifndef NNFAST_CODES_H
#define NNFAST_CODES_H

enum {
    NNF_ACT_LINEAR = 0,
    NNF_ACT_RELU = 1,
    NNF_ACT_LEAKY_RELU = 2,
    NNF_ACT_TANH = 3,
    NNF_ACT_SIGMOID = 4,
    NNF_ACT_SOFTMAX = 5,
    NNF_ACT_LAST_HIDDEN = NNF_ACT_SIGMOID,      /* hidden layers: 0..NNF_ACT_LAST_HIDDEN */
    NNF_ACT_LAST = NNF_ACT_SOFTMAX              /* any layer: 0..NNF_ACT_LAST */
};

/* The output layer's loss, fused with its activation (softmax, sigmoid, linear). */
enum {
    NNF_LOSS_SOFTMAX_XENT = 0,
    NNF_LOSS_SIGMOID_BCE = 1,
    NNF_LOSS_SQUARED_ERROR = 2,
    NNF_LOSS_LAST = NNF_LOSS_SQUARED_ERROR      /* 0..NNF_LOSS_LAST */
};

/* Element type of the training data converted one mini-batch at a time. */
enum {
    NNF_SRC_UINT8 = 0,
    NNF_SRC_FLOAT32 = 1,
    NNF_SRC_FLOAT64 = 2
};

#define NNF_LEAKY_SLOPE 0.01                    /* leaky relu for z < 0, as in PyTorch */

#endif
