"""A network compiled ahead of time for this computer's CPU, built once by ``lightseg compile``.

Two forms, chosen by the CPU. Where it has bfloat16 instructions (AVX-512 BF16 or AMX), MiniSeg compiled by torch's
AOTInductor in bfloat16 runs up to 1.35x the eager fp32 engine form; eager bfloat16 is slower than fp32 there, and
compiling in a process costs 25-50 s, longer than segmenting a CT. Elsewhere (AVX2 CPUs, most workstations) bfloat16
would be emulated and an fp32 AOTInductor form is no faster than eager, but the network exported to ONNX and run by
ONNX Runtime in fp32 is about 1.2x (``benchmarks/RESULTS.md``, "Speed"). Either is built once per computer and network
into ``$LIGHTSEG_HOME/compiled`` and loaded in milliseconds by every later process. Its file name holds everything
it depends on (the weights' sha256, the engine form's version, torch's version, the CPU's vector capability, the
form, the input shape), so a stale artefact is never picked up. The engine runs it for CT volumes on the CPU when one
exists; 2D slices stay on the eager network. bfloat16 moves the probabilities slightly (the volume benchmark with and
without it is in ``benchmarks/RESULTS.md``); the ONNX form computes the eager one's to 1e-5.
"""

from __future__ import annotations

import logging
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
BF16 = "bf16"  # AOTInductor in bfloat16, a .pt2 package
ONNX = "onnx-fp32"  # ONNX Runtime in fp32, a .onnx file
FORM_NAMES = {BF16: "compiled bf16", ONNX: "compiled fp32 (ONNX Runtime)"}  # as reports and tooltips say it
SUFFIXES = {BF16: ".pt2", ONNX: ".onnx"}


def compiled_dir() -> Path:
    """``$LIGHTSEG_HOME/compiled``, by default ``~/.lightseg/compiled``."""
    return registry.home_dir() / "compiled"


def cpu_has_bf16() -> bool:
    """Whether oneDNN runs bfloat16 natively on this CPU (else it emulates it, slower than fp32)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def form_for_this_cpu() -> str:
    """The compiled form that is fastest on this CPU: bfloat16 where it has the instructions, else ONNX Runtime."""
    return BF16 if cpu_has_bf16() else ONNX


def artefact_path(card: ModelCard, spec: InputSpec, form: str | None = None) -> Path:
    """Where the compiled ``form`` (default: this CPU's) of ``card``'s network for this torch and CPU lives, whether
    or not it exists.

    Named by the network (architecture and weights), not the model id: cards sharing a weights file (a model and its
    confirmed variant) share the artefact."""
    form = form or form_for_this_cpu()
    channels = len(spec.mean)
    height, width = spec.size
    torch_version = torch.__version__.replace("+", "-")
    capability = torch.backends.cpu.get_cpu_capability().lower()
    name = (f"{card.architecture}-{card.weights_sha256[:16]}-form{FORM_VERSION}-torch{torch_version}-{capability}-"
            f"{form}-b{BATCH}x{channels}x{height}x{width}{SUFFIXES[form]}")
    return compiled_dir() / name


def form_of(artefact: Path) -> str:
    """The form of a compiled artefact, by its file type."""
    return next(form for form, suffix in SUFFIXES.items() if artefact.suffix == suffix)


def built_artefact(card: ModelCard, spec: InputSpec) -> Path | None:
    """The compiled artefact of ``card``'s network that exists for this torch and CPU, this CPU's form first."""
    forms = [form_for_this_cpu()] + [form for form in FORM_NAMES if form != form_for_this_cpu()]
    return next((path for path in (artefact_path(card, spec, form) for form in forms) if path.exists()), None)


def networks_of(card: ModelCard) -> list[ModelCard]:
    """The cards whose networks segmenting with ``card`` runs: its own, and its confirming network's."""
    confirm_with = card.postprocessing_settings().confirm_with
    return [card] + ([registry.resolve(confirm_with)] if confirm_with else [])


def is_compiled(card: ModelCard) -> bool:
    """Whether ``lightseg compile`` built ``card``'s network for this torch and CPU."""
    return built_artefact(card, card.input_spec()) is not None


def compiled_form(card: ModelCard) -> str | None:
    """The name of the compiled form the engine would run for ``card`` on this computer (None: the eager network)."""
    path = built_artefact(card, card.input_spec())
    return None if path is None else FORM_NAMES[form_of(path)]


class _Logits(nn.Module):
    """The engine form's logits alone: (B, C, H, W) input -> (B, K, H, W), fp32 (what ONNX export takes)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)[0]


class _Bf16Logits(nn.Module):
    """The network in bfloat16, taking and giving fp32: (B, C, H, W) input -> (B, K, H, W) logits."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network.to(torch.bfloat16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x.to(torch.bfloat16))[0].float()


def compile_network(card: ModelCard, force: bool = False, form: str | None = None) -> Path:
    """Build ``card``'s network in ``form`` (default: this CPU's, ``form_for_this_cpu``); returns its path.

    bfloat16 takes one to two minutes on two cores, ONNX 20-30 s. An existing artefact is kept unless ``force``.
    Written to a temporary file first, so an interrupted build leaves nothing that would be loaded. Naming ``form``
    builds it on any CPU: bfloat16 is then emulated, slower than the eager network (the tests use this to check both
    forms everywhere).
    """
    form = form or form_for_this_cpu()
    spec = card.input_spec()
    path = artefact_path(card, spec, form)
    if path.exists() and not force:
        return path
    network = inference_form(load_network(card)).eval()
    example = torch.zeros(BATCH, len(spec.mean), *spec.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(suffix=path.suffix, dir=path.parent)
    os.close(handle)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch's own deprecations inside export
            if form == BF16:
                _build_bf16(network, example, partial)
            else:
                _build_onnx(network, example, partial)
        os.chmod(partial, 0o644)  # mkstemp's 0600 would keep other accounts on a shared LightSeg home out
        os.replace(partial, path)
    except Exception as exc:  # export or C++ compilation failed: say so in one line
        raise LightSegError(f"could not compile the network ({type(exc).__name__}: {str(exc).splitlines()[0]})",
                            card.path) from None
    finally:
        Path(partial).unlink(missing_ok=True)
    return path


def _build_bf16(network: nn.Module, example: torch.Tensor, path: str) -> None:
    """AOTInductor in bfloat16 (a C++ compiler builds it)."""
    from torch._inductor import aoti_compile_and_package

    channels_last = torch.channels_last
    exported = torch.export.export(_Bf16Logits(network.to(memory_format=channels_last)).eval(),
                                   (example.contiguous(memory_format=channels_last),))
    aoti_compile_and_package(exported, package_path=path)


def _build_onnx(network: nn.Module, example: torch.Tensor, path: str) -> None:
    """ONNX, one file, for ONNX Runtime (torch's exporter; it logs warnings about torchvision that do not apply)."""
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        program = torch.onnx.export(_Logits(network).eval(), (example,), dynamo=True, verbose=False,
                                    input_names=["x"], output_names=["logits"])
        program.save(path, external_data=False)
    finally:
        exporter_log.setLevel(level)


class _FixedBatchNetwork(nn.Module):
    """The engine network's interface, (B, C, H, W) -> ``(logits,)`` for any B, over a form built for ``BATCH``."""

    form = ""

    def _run(self, chunk: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        outputs = []
        for start in range(0, x.shape[0], BATCH):
            chunk = x[start:start + BATCH]
            count = chunk.shape[0]
            if count < BATCH:
                chunk = torch.cat([chunk, chunk.new_zeros((BATCH - count, *chunk.shape[1:]))])
            outputs.append(self._run(chunk.float())[:count])
        return (torch.cat(outputs) if len(outputs) > 1 else outputs[0],)


class CompiledNetwork(_FixedBatchNetwork):
    """A loaded bfloat16 AOTInductor package."""

    form = FORM_NAMES[BF16]

    def __init__(self, path: Path) -> None:
        super().__init__()
        # the C++ loader directly: torch._inductor's Python loader costs a second of imports per process
        self.runner = torch._C._aoti.AOTIModelPackageLoader(str(path), "model", False, 1, -1)
        self.path = path

    def _run(self, chunk: torch.Tensor) -> torch.Tensor:
        return self.runner.run([chunk.contiguous(memory_format=torch.channels_last)])[0]


class OnnxNetwork(_FixedBatchNetwork):
    """A loaded ONNX file, run by ONNX Runtime on the CPU with torch's thread count."""

    form = FORM_NAMES[ONNX]

    def __init__(self, path: Path) -> None:
        super().__init__()
        import onnxruntime  # only where an ONNX form is loaded

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.log_severity_level = 3  # errors only
        # spinning threads would fight torch's for the cores between batches (x0.95 instead of x1.2, measured)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.path = path

    def _run(self, chunk: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {"x": chunk.contiguous().numpy()})[0])


def load_compiled(card: ModelCard, spec: InputSpec, device: torch.device
                  ) -> tuple[_FixedBatchNetwork | None, str]:
    """The compiled form of ``card``'s network when one was built for this computer and ``device`` is the CPU, and
    a note when one exists but cannot be loaded (the engine then runs the eager network)."""
    if device.type != "cpu":
        return None, ""
    path = built_artefact(card, spec)
    if path is None:
        return None, ""
    try:
        return (CompiledNetwork(path) if form_of(path) == BF16 else OnnxNetwork(path)), ""
    except Exception as exc:  # a damaged artefact must not stop a segmentation: the eager network runs instead
        return None, (f"the compiled network {path} could not be loaded ({type(exc).__name__}); the eager network "
                      "ran instead (rebuild it with `lightseg compile --force`)")
