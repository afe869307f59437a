"""The command line's samples: ``--input-shape``, ``--input-value`` and ``--inputs`` (files, or a folder of
images)."""

from __future__ import annotations

import argparse

from onnxfold.errors import CliError


def read_inputs(args: argparse.Namespace):
    """(``--input-shape`` parsed or None, ``--inputs`` read or None) for the model ``args.model``; a
    folder of images read with ``--image-preprocess`` prints what the model is fed, its range and
    mean, to check against the model's own code (dlib's age predictor fed caffe-scaled faces, 256
    times its own scale, answered age 0 to 94% of them, and a fold at 67.7% measured 1.0000)."""

    from onnxfold.runtime.inputs import check_input_shapes, parse_input_shapes
    from onnxfold.runtime.sample_files import load_inputs
    from onnxfold.runtime.session import make_session

    shapes = parse_input_shapes(args.input_shape) if args.input_shape else None
    if shapes:
        check_input_shapes(shapes, args.model)
    from onnxfold.ir.batch_view import unbatched

    inputs = None
    if getattr(args, "image_preprocess", None) and not args.inputs:
        raise CliError(
            "--image-preprocess reads a folder of images given with --inputs: without it, it does nothing"
        )
    if args.inputs:
        from onnxfold.runtime.batch_axes import declared_layout

        session = make_session(str(args.model))
        with declared_layout(session):  # a time-major model's samples on its batch axis
            inputs = load_inputs(
                args.inputs,
                session,
                image_preprocess=args.image_preprocess,
                shapes=shapes,
                batch_view=unbatched(args.model),
            )
        if getattr(args, "image_preprocess", None):
            for name, x in inputs.items():
                print(
                    f"images: {name} {list(x.shape)} from {args.inputs} by --image-preprocess "
                    f"{args.image_preprocess}: values {float(x.min()):.4g} to {float(x.max()):.4g}, "
                    f"mean {float(x.mean()):.4g}"
                )
    return shapes, inputs


def input_values(args: argparse.Namespace) -> dict[str, float | tuple[float, float]] | None:
    """``--input-value NAME=V`` items as {name: V} and ``NAME=LO..HI`` as {name: (LO, HI)}; a one-line
    error for anything else."""
    values: dict[str, float | tuple[float, float]] = {}
    for item in getattr(args, "input_value", None) or []:
        name, sep, text = item.rpartition("=")
        try:
            if not sep or not name:
                raise ValueError
            low, dots, high = text.partition("..")
            values[name] = (float(low), float(high)) if dots else float(text)
            if dots and not float(low) < float(high):
                raise ValueError
        except ValueError:
            raise CliError(
                f"--input-value takes NAME=VALUE or NAME=LOW..HIGH (numbers, LOW < HIGH), got {item!r}"
            ) from None
    return values or None
