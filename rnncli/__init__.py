"""rnncli: a recurrent-network sentiment classifier you can train, evaluate, serve and look inside."""

from rnncli.errors import RnncliError

__version__ = "0.1.0"
__all__ = ["RnncliError", "__version__", "load_model"]


def load_model(path="runs/latest", device="cpu", runtime="torch"):
    """Load a trained model folder for prediction: `load_model("runs/latest").predict(["great film"])`;
    `runtime="onnx"` runs its model.onnx (see `rnncli export`) in onnxruntime, without torch."""
    from rnncli.predict import Classifier

    return Classifier.load(path, device=device, runtime=runtime)
