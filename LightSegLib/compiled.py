"""A network compiled ahead of time for this computer's CPU: bfloat16, built once by ``lightseg compile``.

On a CPU with bfloat16 instructions (AVX-512 BF16 or AMX), MiniSeg compiled by torch's AOTInductor in bfloat16 runs
about 1.35x the eager fp32 engine form (``benchmarks/bench_inference.py``); eager bfloat16 is slower than fp32 there,
and compiling in a process costs 25-50 s, longer than segmenting a CT. So the compiled form is built once per
computer and network into ``$LIGHTSEG_HOME/compiled`` and loaded in milliseconds by every later process. Its file name
holds everything it depends on (the weights' sha256, the engine form's version, torch's version, the CPU's vector
capability, the input shape), so a stale artefact is never picked up. The engine runs it for CT volumes on the CPU
when one exists; 2D slices stay on the eager network. bfloat16 moves the probabilities slightly: the volume benchmark
with and without it is in ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from . import registry
from .cards import ModelCard, load_network
from .errors import LightSegError
from .models.inference import inference_form
from .network import InputSpec

BATCH = 8  # the engine's CPU batch; other batch sizes run in chunks of this, the last one padded
FORM_VERSION = 1  # bump when models/inference.py changes what the engine computes
PRECISION = "bf16"


def compiled_dir() -> Path:
    """``$LIGHTSEG_HOME/compiled``, by default ``~/.lightseg/compiled``."""
    return registry.home_dir() / "compiled"


def cpu_has_bf16() -> bool:
    """Whether oneDNN runs bfloat16 natively on this CPU (else it emulates it, slower than fp32)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def artefact_path(card: ModelCard, spec: InputSpec) -> Path:
    """Where the compiled form of ``card``'s network for this torch and CPU lives (whether or not it exists).

    Named by the network (architecture and weights), not the model id: cards sharing a weights file (a model and its
    confirmed variant) share the artefact."""
    channels = len(spec.mean)
    height, width = spec.size
    torch_version = torch.__version__.replace("+", "-")
    capability = torch.backends.cpu.get_cpu_capability().lower()
    name = (f"{card.architecture}-{card.weights_sha256[:16]}-form{FORM_VERSION}-torch{torch_version}-{capability}-"
            f"{PRECISION}-b{BATCH}x{channels}x{height}x{width}.pt2")
    return compiled_dir() / name


def networks_of(card: ModelCard) -> list[ModelCard]:
    """The cards whose networks segmenting with ``card`` runs: its own, and its confirming network's."""
    confirm_with = card.postprocessing_settings().confirm_with
    return [card] + ([registry.resolve(confirm_with)] if confirm_with else [])


def is_compiled(card: ModelCard) -> bool:
    """Whether ``lightseg compile`` built ``card``'s network for this torch and CPU."""
    return artefact_path(card, card.input_spec()).exists()


class _Bf16Logits(nn.Module):
    """The network in bfloat16, taking and giving fp32: (B, C, H, W) input -> (B, K, H, W) logits."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network.to(torch.bfloat16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x.to(torch.bfloat16))[0].float()


def compile_network(card: ModelCard, force: bool = False, native_only: bool = True) -> Path:
    """Build the compiled form of ``card``'s network (one to two minutes on two cores); returns its path.

    An existing artefact is kept unless ``force``. Written to a temporary file first, so an interrupted build leaves
    nothing that would be loaded. Where the CPU has no bfloat16 instructions a build is refused unless
    ``native_only`` is False: the build and the artefact then work, with bfloat16 emulated and slower than the eager
    network (what the tests use to check the build, the loading and the engine's choice on any CPU).
    """
    spec = card.input_spec()
    path = artefact_path(card, spec)
    if path.exists() and not force:
        return path
    if native_only and not cpu_has_bf16():
        raise LightSegError("this CPU has no bfloat16 instructions (AVX-512 BF16 or AMX): a compiled network would be "
                            "slower than the eager one", card.path)
    network = _Bf16Logits(inference_form(load_network(card)).to(memory_format=torch.channels_last)).eval()
    example = torch.zeros(BATCH, len(spec.mean), *spec.size).contiguous(memory_format=torch.channels_last)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(suffix=".pt2", dir=path.parent)
    os.close(handle)
    try:
        from torch._inductor import aoti_compile_and_package

        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch's own deprecations inside export
            exported = torch.export.export(network, (example,))
            aoti_compile_and_package(exported, package_path=partial)
        os.chmod(partial, 0o644)  # mkstemp's 0600 would keep other accounts on a shared LightSeg home out
        os.replace(partial, path)
    except Exception as exc:  # export or C++ compilation failed: say so in one line
        raise LightSegError(f"could not compile the network ({type(exc).__name__}: {str(exc).splitlines()[0]})",
                            card.path) from None
    finally:
        Path(partial).unlink(missing_ok=True)
    return path


class CompiledNetwork(nn.Module):
    """A loaded compiled artefact with the engine network's interface: (B, C, H, W) -> ``(logits,)``, any B."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        # the C++ loader directly: torch._inductor's Python loader costs a second of imports per process
        self.runner = torch._C._aoti.AOTIModelPackageLoader(str(path), "model", False, 1, -1)
        self.path = path

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        outputs = []
        for start in range(0, x.shape[0], BATCH):
            chunk = x[start:start + BATCH]
            count = chunk.shape[0]
            if count < BATCH:
                chunk = torch.cat([chunk, chunk.new_zeros((BATCH - count, *chunk.shape[1:]))])
            chunk = chunk.float().contiguous(memory_format=torch.channels_last)
            outputs.append(self.runner.run([chunk])[0][:count])
        return (torch.cat(outputs) if len(outputs) > 1 else outputs[0],)


def load_compiled(card: ModelCard, spec: InputSpec, device: torch.device) -> tuple[CompiledNetwork | None, str]:
    """The compiled form of ``card``'s network when one was built for this computer and ``device`` is the CPU, and
    a note when one exists but cannot be loaded (the engine then runs the eager network)."""
    if device.type != "cpu":
        return None, ""
    path = artefact_path(card, spec)
    if not path.exists():
        return None, ""
    try:
        return CompiledNetwork(path), ""
    except Exception as exc:  # a damaged artefact must not stop a segmentation: the eager network runs instead
        return None, (f"the compiled network {path} could not be loaded ({type(exc).__name__}); the eager network "
                      "ran instead (rebuild it with `lightseg compile --force`)")
