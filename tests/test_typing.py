"""The public API carries type hints (PEP 561: the package ships py.typed)."""
import os
import sys
import typing

import pytest

import nnfast as nf

PUBLIC = [nf.Network.__init__, nf.Network.fit, nf.Network.forward, nf.Network.predict,
          nf.Network.predict_proba, nf.Network.evaluate, nf.Network.loss_and_grads,
          nf.Network.save, nf.Network.to_onnx, nf.Network.summary, nf.load, nf.gradcheck,
          nf.set_num_threads, nf.get_num_threads, nf.SGD.__init__, nf.Adam.__init__,
          nf.callbacks.EarlyStopping.__init__, nf.schedules.Cosine.__init__]


def test_py_typed_ships_with_the_package():
    assert os.path.isfile(os.path.join(os.path.dirname(nf.__file__), "py.typed"))


@pytest.mark.skipif(sys.version_info < (3, 10), reason="X | Y hints evaluate from 3.10")
@pytest.mark.parametrize("fn", PUBLIC, ids=lambda f: f.__qualname__)
def test_public_functions_have_resolvable_hints(fn):
    # names imported for type checkers only (TYPE_CHECKING) are given here
    hints = typing.get_type_hints(fn, localns={"Network": nf.Network, "Optimizer": nf.Optimizer})
    assert "return" in hints
    params = [p for p in fn.__code__.co_varnames[:fn.__code__.co_argcount] if p != "self"]
    assert set(params) <= set(hints), set(params) - set(hints)


def test_estimators_have_hints():
    sk = pytest.importorskip("nnfast.sklearn")
    for cls in (sk.NNClassifier, sk.NNRegressor):
        for name in ("fit", "partial_fit", "predict", "to_onnx"):
            assert "return" in getattr(cls, name).__annotations__
