"""rnncli: a recurrent-network sentiment classifier you can train, evaluate, serve and look inside."""

from rnncli.errors import RnncliError

__version__ = "0.1.0"
__all__ = ["RnncliError", "__version__", "load_model"]


def load_model(path="runs/latest", device="cpu"):
    """Load a trained model folder for prediction: `load_model("runs/latest").predict(["great film"])`."""
    from rnncli.predict import Classifier

    return Classifier.load(path, device=device)
