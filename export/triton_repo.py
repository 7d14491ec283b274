"""A Triton Inference Server model repository for the exported generator.

Layout (https://github.com/triton-inference-server/server/blob/main/docs/user_guide/model_repository.md)::

    DIR/colorizer_onnx/config.pbtxt        backend "onnxruntime"
    DIR/colorizer_onnx/1/model.onnx
    DIR/colorizer_tensorrt/config.pbtxt    platform "tensorrt_plan" (only with a plan)
    DIR/colorizer_tensorrt/1/model.plan
    DIR/colorizer_openvino/config.pbtxt    backend "openvino", KIND_CPU (only with an OpenVINO IR)
    DIR/colorizer_openvino/1/model.xml, model.bin

Both models batch dynamically (the first dimension of every tensor is the batch, ``max_batch_size``
from the export's batch range); height and width are variable (-1). Triton's dims leave the batch
out, so the per-image ``seed`` (N,) is declared ``dims: [1]`` with ``reshape: { shape: [] }``. Each
``config.pbtxt`` is checked against Triton's own ``ModelConfig`` protobuf message (shipped in
``tritonclient``) before the repository is written, when tritonclient is installed.

A repository is often shared: only the two folders above are ever written, and only when the folder
of that name is absent or holds exactly a model written here (a same-name folder with anything else
is refused, nothing deleted). Our folder is replaced atomically (``colorizer.atomic.replace_directory``):
the new one is complete and fsync'ed beside it (a hidden ``.colorizer_onnx.*.tmp``) before a rename
puts it in place. Files get the usual umask-respecting modes (0644 / 0755 typically), so a server
running as another user can read them.
"""

from __future__ import annotations

import contextlib
import os
import shutil

from colorizer import atomic
from colorizer.errors import ConfigError
from colorizer.export.artifact import check_output_folder, folder_lock
from colorizer.export.interface import NOISE_INPUT_NAMES, OUTPUT_NAME, PALETTE_SIZE
from colorizer.export.onnx_export import read_metadata

ONNX_MODEL_NAME = "colorizer_onnx"
TENSORRT_MODEL_NAME = "colorizer_tensorrt"
OPENVINO_MODEL_NAME = "colorizer_openvino"
# An OpenVINO IR is two files: the graph (model.xml, the name a model folder is checked by) and its weights.
OPENVINO_FILES = ("model.xml", "model.bin")
DEFAULT_QUEUE_DELAY_US = 2000
MAX_BATCH_SIZE = 2**31 - 1  # config.pbtxt's max_batch_size is an int32


def tensor_config(name: str) -> dict:
    """Triton's description of one graph tensor: data_type, dims (without the batch), reshape."""
    if name == "sketch":
        return {"data_type": "TYPE_FP32", "dims": [3, -1, -1]}
    if name == "palette":
        return {"data_type": "TYPE_FP32", "dims": [PALETTE_SIZE, 3]}
    if name == "seed":
        return {"data_type": "TYPE_INT32", "dims": [1], "reshape": []}
    if name in NOISE_INPUT_NAMES:
        return {"data_type": "TYPE_FP32", "dims": [1, -1, -1]}
    if name == OUTPUT_NAME:
        return {"data_type": "TYPE_FP32", "dims": [3, -1, -1]}
    raise ValueError(f"unknown tensor {name!r}")


def _tensor_block(name: str) -> str:
    spec = tensor_config(name)
    dims = ", ".join(str(d) for d in spec["dims"])
    body = f'    name: "{name}"\n    data_type: {spec["data_type"]}\n    dims: [ {dims} ]'
    if "reshape" in spec:
        body += f"\n    reshape: {{ shape: [ {', '.join(str(d) for d in spec['reshape'])} ] }}"
    return "  {\n" + body + "\n  }"


def model_config_text(
    name: str,
    backend: str,
    inputs: list[str],
    max_batch_size: int,
    preferred_batch_sizes: list[int],
    gpu: bool,
    parameters: dict[str, str] | None = None,
) -> str:
    """The config.pbtxt text of one model. backend: "onnxruntime", "openvino" or "tensorrt"."""
    lines = [f'name: "{name}"']
    if backend in ("onnxruntime", "openvino"):
        lines += [f'backend: "{backend}"']
    elif backend == "tensorrt":
        lines += ['platform: "tensorrt_plan"']
    else:
        raise ValueError(f"unknown backend {backend!r}")
    lines += [f"max_batch_size: {max_batch_size}"]
    lines += ["input [", ",\n".join(_tensor_block(n) for n in inputs), "]"]
    lines += ["output [", _tensor_block(OUTPUT_NAME), "]"]
    preferred = ", ".join(str(b) for b in sorted(set(preferred_batch_sizes)) if 1 <= b <= max_batch_size)
    lines += ["dynamic_batching {"]
    if preferred:
        lines += [f"  preferred_batch_size: [ {preferred} ]"]
    lines += [f"  max_queue_delay_microseconds: {DEFAULT_QUEUE_DELAY_US}", "}"]
    kind = "KIND_GPU" if gpu else "KIND_CPU"
    lines += [f"instance_group [ {{ count: 1 kind: {kind} }} ]"]
    for key, value in (parameters or {}).items():
        escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
        lines += [f'parameters {{ key: "{key}" value: {{ string_value: "{escaped}" }} }}']
    return "\n".join(lines) + "\n"


def parse_model_config(text: str):
    """Parse config.pbtxt text into Triton's ModelConfig message (raises on a schema error).

    Returns None when tritonclient (with its grpc extra) is not installed.
    """
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except (ImportError, RuntimeError):  # tritonclient raises RuntimeError without grpc support
        return None
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def _model_files(filename: str) -> tuple[str, ...]:
    """The files of a model whose main file is ``filename`` (an OpenVINO IR brings its weights)."""
    return OPENVINO_FILES if filename == OPENVINO_FILES[0] else (filename,)


def _expected_files(name: str, filename: str) -> set[str]:
    return {"config.pbtxt", *(os.path.join("1", f) for f in _model_files(filename))}


def _files_under(folder: str) -> set[str] | None:
    """Relative paths of every file under ``folder``; None if it holds anything but files and folders."""
    found = set()
    for dirpath, dirnames, filenames in os.walk(folder):
        for d in dirnames:
            if os.path.islink(os.path.join(dirpath, d)):
                return None
        for f in filenames:
            path = os.path.join(dirpath, f)
            if os.path.islink(path) or not os.path.isfile(path):
                return None
            found.add(os.path.relpath(path, folder))
    return found


def is_own_model_folder(folder: str, name: str, filename: str) -> bool:
    """True when ``folder`` holds exactly a model this module writes: config.pbtxt naming ``name``
    with the colorizer parameters, and 1/<filename>. Anything else there is someone else's."""
    if os.path.islink(folder) or not os.path.isdir(folder):
        return False
    if _files_under(folder) != _expected_files(name, filename):
        return False
    try:
        with open(os.path.join(folder, "config.pbtxt")) as f:
            text = f.read(1 << 20)
    except (OSError, UnicodeDecodeError):
        return False
    return text.startswith(f'name: "{name}"\n') and 'key: "noise_mode"' in text


def check_model_folders(directory: str, models) -> None:
    """ConfigError unless each (name, model file name) folder in ``directory`` is absent or ours
    (``is_own_model_folder``): the overwrite rule of colorizer-export for a repository."""
    for name, filename in models:
        target = os.path.join(directory, name)
        if os.path.lexists(target) and not is_own_model_folder(target, name, filename):
            raise ConfigError(
                f"{target} exists and is not a {name} model written by colorizer-export; "
                f"move it away or choose another --triton-repo folder (nothing was written to {directory})"
            )


def write_triton_repo(
    directory: str,
    onnx_path: str,
    plan_path: str | None = None,
    *,
    openvino_xml: str | None = None,
    max_batch_size: int = 8,
    preferred_batch_sizes: tuple[int, ...] = (),
    onnx_on_gpu: bool = False,
) -> list[str]:
    """Write this project's model folders into the repository ``directory``; returns config paths.

    Only ``DIR/colorizer_onnx`` (and ``DIR/colorizer_tensorrt`` with a plan) are written; anything
    else in DIR (other models, files) is left alone. ``directory`` is created if missing (its
    parent must exist). A model folder of ours from an earlier export is replaced atomically: the
    new one is built beside it under a hidden name, then renamed over it. A folder of the same name
    that holds anything else is refused with ConfigError before anything is written.

    onnx_path: an exported .onnx (its metadata gives the inputs and noise mode); plan_path: an
    optional TensorRT plan built from it. max_batch_size: the export's batch maximum (for a plan, at
    most its profile's MAX). onnx_on_gpu: run the onnxruntime model on a GPU instance group.
    openvino_xml: an OpenVINO IR of the same graph (``colorizer-export --openvino``: its model.xml, with
    model.bin beside it), served by Triton's openvino backend on CPU instances.
    """
    if not 1 <= max_batch_size <= MAX_BATCH_SIZE:
        raise ConfigError(f"Triton max batch size must be from 1 to {MAX_BATCH_SIZE}, got {max_batch_size}")
    directory = check_output_folder(directory, "Triton model repository")
    metadata = read_metadata(onnx_path)
    inputs = metadata.get("inputs", "").split(",")
    if not inputs or inputs[:2] != ["sketch", "palette"]:
        raise ConfigError(f"{onnx_path} is not a colorizer ONNX export (no colorizer metadata)")
    keys = ("noise_mode", "value_range", "palette_size", "source_sha256")
    parameters = {k: metadata[k] for k in keys if k in metadata}
    preferred = list(preferred_batch_sizes) or [max_batch_size]
    models = [(ONNX_MODEL_NAME, "onnxruntime", onnx_path, "model.onnx", onnx_on_gpu)]
    if plan_path:
        models.append((TENSORRT_MODEL_NAME, "tensorrt", plan_path, "model.plan", True))
    if openvino_xml:
        models.append((OPENVINO_MODEL_NAME, "openvino", openvino_xml, OPENVINO_FILES[0], False))
    texts = {}
    for name, backend, _, _filename, gpu in models:
        text = model_config_text(name, backend, inputs, max_batch_size, preferred, gpu, parameters)
        parse_model_config(text)  # a schema error here is a bug in this module: let it raise
        texts[name] = text
    check_model_folders(directory, [(name, filename) for name, _, _, filename, _ in models])
    try:
        os.makedirs(directory, mode=0o777, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create Triton model repository {directory}: {exc.strerror or exc}") from exc
    try:
        # Every model folder is complete under its temporary name before any of them replaces ours
        # (colorizer.atomic.replace_directory; on an error none is swapped in and the temporaries go).
        # Built and swapped under the repository's lock, where the folders are checked again: two
        # exports into one repository take turns, and a folder someone else made meanwhile is kept.
        with contextlib.ExitStack() as stack:
            stack.enter_context(folder_lock(directory))  # entered first: released after every swap
            check_model_folders(directory, [(name, filename) for name, _, _, filename, _ in models])
            for name, _, source, filename, _ in models:
                tmp = stack.enter_context(atomic.replace_directory(os.path.join(directory, name)))
                version_dir = os.path.join(tmp, "1")
                os.makedirs(version_dir)
                for file in _model_files(filename):  # model.bin sits beside model.xml
                    shutil.copyfile(os.path.join(os.path.dirname(source), file) if file != filename else source,
                                    os.path.join(version_dir, file))  # fmt: skip
                with open(os.path.join(tmp, "config.pbtxt"), "w") as f:
                    f.write(texts[name])
    except OSError as exc:
        raise ConfigError(f"cannot write Triton model repository {directory}: {exc.strerror or exc}") from exc
    return [os.path.join(directory, name, "config.pbtxt") for name, *_ in models]


# ------------------------------------------------------------------------------------------------
# The colorizer-export step (colorizer.export.formats)


def cli_options(parser) -> None:
    """A repository takes the common --batch (its max batch size and preferred batch sizes)."""


def cli_check(args, batch, size) -> None:
    if not args.triton_repo:
        return
    directory = check_output_folder(args.triton_repo, "Triton model repository")
    # Before any work, so a refused repository costs nothing and nothing else is written first.
    models = [(ONNX_MODEL_NAME, "model.onnx")] + ([(TENSORRT_MODEL_NAME, "model.plan")] if args.trt else [])
    if getattr(args, "openvino", None):
        models.append((OPENVINO_MODEL_NAME, OPENVINO_FILES[0]))
    check_model_folders(directory, models)
    if batch.max > MAX_BATCH_SIZE:
        raise ConfigError(f"--batch: a Triton max batch size must be at most {MAX_BATCH_SIZE}, got {batch.max}")


def cli_export(job):
    """The repository around the job's ONNX graph, and its TensorRT plan when --trt built one."""
    from colorizer.export.formats import Exported

    plan = job.outputs.get("tensorrt")
    ir = job.outputs.get("openvino")
    configs = write_triton_repo(
        job.args.triton_repo,
        job.outputs["onnx"].path,
        plan.path if plan is not None else None,
        openvino_xml=ir.xml if ir is not None else None,
        max_batch_size=job.batch.max,
        preferred_batch_sizes=(job.batch.opt, job.batch.max),
    )
    message = f"wrote Triton model repository {os.path.abspath(job.args.triton_repo)} ({len(configs)} models)"
    return Exported(configs, message)
