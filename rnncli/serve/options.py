"""What a server is told: the model, where to listen, the limits on a request, who may call."""

from __future__ import annotations

import dataclasses
import importlib.util
import ipaddress
from dataclasses import dataclass, field

from rnncli.config import COMMAND_LINE, _check, _option, field_help
from rnncli.errors import RnncliError

EXTRA = 'pip install "rnncli[serve]"'
NEEDS = ("fastapi", "uvicorn", "prometheus_client")
LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1"]
ANY_ADDRESS = ("0.0.0.0", "::", "")


def require_extra() -> None:
    """A one-line error naming the extra when the serving libraries are not installed."""
    missing = [name for name in NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        raise RnncliError(f"rnncli serve needs {', '.join(missing)}: {EXTRA}")


@dataclass
class ServeOptions:
    model: str = _option("runs/latest", "Model folder to serve.")
    host: str = _option("127.0.0.1", "Address to listen on. The default takes connections from this "
                                     "machine only; 0.0.0.0 takes them from anywhere.")
    port: int = _option(8000, "Port; 0 picks a free one (printed at start).", min=0, max=65535)
    device: str = _option("cpu", "auto, cpu, cuda or cuda:N.")
    runtime: str = _option("auto", "What runs the model: torch, onnx (the folder's model.onnx in onnxruntime; "
                                   "see rnncli export), or auto: onnx when the folder has one, onnxruntime is "
                                   "installed and the device is the CPU, with torch for /explain.")
    max_batch: int = _option(256, "Most texts in one forward pass; 1 runs every request alone.", min=1, max=65536)
    max_wait_ms: float = _option(2.0, "How long a request waits for others to share its forward pass, "
                                      "in milliseconds.", min=0.0, max=1000.0)
    max_texts: int = _option(256, "Most texts in one request.", min=1, max=1_000_000)
    max_body: int = _option(1_048_576, "Largest request body, in bytes.", min=1, max=1 << 30)
    workers: int = _option(1, "Server processes, each with its own copy of the model.", min=1, max=64)
    allowed_host: tuple[str, ...] | None = _option(None, "Host header a request may carry (repeatable); by default "
                                            "the served host's names, so DNS rebinding cannot reach a "
                                            "loopback server. * allows any.")
    access_log: bool = _option(False, "Log one line per request on stderr.")
    api_key: str | None = field(default=None, repr=False, metadata={"help": (
        "Require `Authorization: Bearer KEY` on every endpoint but /health. Prefer the RNNCLI_API_KEY "
        "environment variable: a command line is visible to other users of the machine.")})

    def check(self) -> None:
        for f in dataclasses.fields(self):
            _check(getattr(self, f.name), f, COMMAND_LINE)
        if self.api_key is not None and (not self.api_key or self.api_key != self.api_key.strip()):
            raise RnncliError("the API key must be non-empty and carry no leading or trailing spaces")

    def hosts(self) -> list[str]:
        """The Host names a request may give: what was asked for, or the served host's own names."""
        if self.allowed_host:
            return list(self.allowed_host)
        if self.host in ANY_ADDRESS:
            return ["*"]  # reachable under any name by choice
        if self.host == "localhost" or _is_loopback(self.host):
            return [*LOOPBACK_NAMES, self.host] if self.host not in LOOPBACK_NAMES else LOOPBACK_NAMES
        return [self.host]

    def to_dict(self) -> dict:
        """The settings /info shows: never the key, only whether one is required."""
        shown = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "api_key"}
        return shown | {"api_key_required": self.api_key is not None}

    @staticmethod
    def help(name: str) -> str:
        f = next(f for f in dataclasses.fields(ServeOptions) if f.name == name)
        return f.metadata["help"] if f.default is None else field_help(f)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
