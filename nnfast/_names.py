"""The public activation and output names, mapped to the codes of the compiled kernels
(defined once in csrc/_codes.h): the one table that nnfast and its NumPy twin both read."""
from . import _kernels as K

# hidden layer activation -> ACT_* code
HIDDEN = {"relu": K.ACT_RELU, "leaky_relu": K.ACT_LEAKY_RELU, "tanh": K.ACT_TANH,
          "sigmoid": K.ACT_SIGMOID, "linear": K.ACT_LINEAR}
# output layer -> ACT_* code of its activation
OUTPUT = {"softmax": K.ACT_SOFTMAX, "sigmoid": K.ACT_SIGMOID, "linear": K.ACT_LINEAR}
# output layer -> LOSS_* code of the loss fused with it
LOSS_CODE = {"softmax": K.LOSS_SOFTMAX_XENT, "sigmoid": K.LOSS_SIGMOID_BCE,
             "linear": K.LOSS_SQUARED_ERROR}
