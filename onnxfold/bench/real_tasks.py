"""Task adapters of ``onnxfold bench real``: inputs, preprocessing and output decoding per model.

A :class:`Task` makes its inputs from a random generator (:meth:`Task.inputs`: batched feeds and a
ground truth where one exists), runs a model file on them and decodes its task output
(:meth:`Task.predict`), and compares a compressed model's decoded output with the original's
(:meth:`Task.compare`, whose ``agreement`` is the number the sweep keeps).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from onnxfold.bench import real_inputs as gen
from onnxfold.bench import real_judges as judge

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def to_chw(images: list[np.ndarray], norm: str) -> np.ndarray:
    """Stack HxWx3 uint8 images into N×3×H×W float32: ``pm1`` (x/255-0.5)/0.5, ``imagenet``
    ((x/255-mean)/std), ``bgr255`` (BGR channels, 0..255)."""
    x = np.stack(images).astype(np.float32)
    if norm == "pm1":
        x = (x / 255.0 - 0.5) / 0.5
    elif norm == "imagenet":
        x = (x / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    elif norm == "bgr255":
        x = x[..., ::-1]
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)


def _run(path: Path, feeds: dict[str, np.ndarray], batch: int = 1) -> list[np.ndarray]:
    """Outputs of ``path`` on ``feeds`` (batched along axis 0), ``batch`` rows per call."""
    from onnxfold.runtime.session import make_session

    session = make_session(str(path))
    names = [i.name for i in session.get_inputs()]
    n = len(next(iter(feeds.values())))
    outs = []
    for s in range(0, n, batch):
        outs.append(session.run(None, {k: feeds[k][s : s + batch] for k in names}))
    return [np.concatenate([o[i] for o in outs]) for i in range(len(outs[0]))]


class Task:
    """Base adapter; ``spec`` is the registry entry, ``source`` the original model file."""

    def __init__(self, spec, source: Path) -> None:
        self.spec, self.source = spec, Path(source)

    def inputs(self, rng: np.random.Generator, n: int) -> tuple[dict[str, np.ndarray], list | None]:
        raise NotImplementedError

    def fitting(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        """``n`` unlabeled fitting samples (a separate generator from the judging inputs)."""
        return self.inputs(rng, n)[0]

    def predict(self, path: Path, feeds: dict[str, np.ndarray]) -> list:
        raise NotImplementedError

    def compare(self, ref: list, got: list) -> dict[str, float]:
        return {"agreement": judge.exact_agreement(ref, got)}

    def accuracy(self, ref: list, truth: list | None) -> dict[str, float]:
        """The original's own task score against the ground truth (empty when there is none)."""
        return {}


class CTCTask(Task):
    """Text-line recogniser with a CTC head; dictionary from the model's ``character`` metadata."""

    def __init__(self, spec, source: Path) -> None:
        super().__init__(spec, source)
        import onnx

        meta = {p.key: p.value for p in onnx.load(str(source), load_external_data=False).metadata_props}
        lines = meta.get("character", "").splitlines()
        self.chars = ["<blank>", *lines, " "] if lines else None

    def inputs(self, rng, n):
        _, _, h, w = self.spec.input_shapes["x"]
        images, texts = gen.text_lines(rng, n, w, h)
        return {"x": to_chw(images, "pm1")}, texts

    def predict(self, path, feeds):
        return judge.ctc_greedy(_run(path, feeds, 8)[0])

    def text(self, seq) -> str:
        return "".join(self.chars[i] if self.chars and i < len(self.chars) else "?" for i in seq)

    def compare(self, ref, got):
        return {"agreement": judge.exact_agreement(ref, got), "cer_vs_original": judge.cer(ref, got)}

    def accuracy(self, ref, truth):
        if not truth or not self.chars:
            return {}
        texts = [self.text(s).strip() for s in ref]
        return {"exact": judge.exact_agreement(truth, texts), "cer": judge.cer(truth, texts)}


class ClassTask(Task):
    """Image classifier over rotations; truth = the rotation index."""

    def inputs(self, rng, n):
        o = self.spec.options
        images, labels = gen.rotated_blocks(rng, n, tuple(o["size"]), tuple(o["angles"]))
        return {next(iter(self.spec.input_shapes)): to_chw(images, o["norm"])}, labels

    def predict(self, path, feeds):
        return [int(i) for i in _run(path, feeds, 8)[0].argmax(-1)]

    def accuracy(self, ref, truth):
        return {"accuracy": judge.exact_agreement(truth, ref)} if truth else {}


class DetectionTask(Task):
    """Base for detectors: agreement = box F1 against the original's boxes at IoU >= 0.5."""

    def compare(self, ref, got):
        return {
            "agreement": judge.box_f1(ref, got),
            "boxes_original": float(sum(len(r) for r in ref)),
            "boxes": float(sum(len(g) for g in got)),
        }


class DBTask(DetectionTask):
    """DB text detector: probability map > 0.3, connected components -> boxes (mean score >= 0.5)."""

    def inputs(self, rng, n):
        _, _, h, w = self.spec.input_shapes["x"]
        return {"x": to_chw([gen.text_page(rng, w, h) for _ in range(n)], "pm1")}, None

    def predict(self, path, feeds):
        from scipy import ndimage

        out = []
        for prob in _run(path, feeds)[0][:, 0]:
            labels, _ = ndimage.label(prob > 0.3)
            boxes = []
            for k, sl in enumerate(ndimage.find_objects(labels), 1):
                mask = labels[sl] == k
                if mask.sum() >= 10 and prob[sl][mask].mean() >= 0.5:
                    boxes.append([sl[1].start, sl[0].start, sl[1].stop, sl[0].stop])
            out.append(np.array(boxes, float).reshape(-1, 4))
        return out


class PicoDetTask(DetectionTask):
    """PicoDet layout detector: 4 strides, DFL box distributions, score > 0.4, class-wise NMS."""

    size = (800, 608)  # H, W

    def inputs(self, rng, n):
        h, w = self.size
        return {"image": to_chw([gen.document_page(rng, w, h) for _ in range(n)], "imagenet")}, None

    def predict(self, path, feeds):
        outs = _run(path, feeds)
        scores = sorted([o for o in outs if o.shape[-1] != 32], key=lambda o: -o.shape[1])
        dists = sorted([o for o in outs if o.shape[-1] == 32], key=lambda o: -o.shape[1])
        h, w = self.size
        result = []
        for b in range(len(outs[0])):
            boxes, conf, cls = [], [], []
            for stride, score, dist in zip((8, 16, 32, 64), scores, dists, strict=True):
                gh, gw = -(-h // stride), -(-w // stride)
                yy, xx = np.mgrid[0:gh, 0:gw]
                cx, cy = (xx.ravel() + 0.5) * stride, (yy.ravel() + 0.5) * stride
                d = dist[b].reshape(-1, 4, 8)
                e = np.exp(d - d.max(-1, keepdims=True))
                ltrb = (e / e.sum(-1, keepdims=True) * np.arange(8)).sum(-1) * stride
                s = score[b]
                keep = s.max(-1) > 0.4
                boxes.append(
                    np.stack([cx - ltrb[:, 0], cy - ltrb[:, 1], cx + ltrb[:, 2], cy + ltrb[:, 3]], -1)[keep]
                )
                conf.append(s.max(-1)[keep])
                cls.append(s.argmax(-1)[keep])
            result.append(
                _classwise_nms(np.concatenate(boxes), np.concatenate(conf), np.concatenate(cls), 0.5)
            )
        return result


def _classwise_nms(boxes: np.ndarray, conf: np.ndarray, cls: np.ndarray, threshold: float) -> np.ndarray:
    rows = []
    for c in np.unique(cls):
        idx = np.flatnonzero(cls == c)
        for i in judge.nms(boxes[idx], conf[idx], threshold):
            rows.append([*boxes[idx[i]], float(c)])
    return np.array(rows, float).reshape(-1, 5)


class YOLOXTask(DetectionTask):
    """YOLOX detector (raw head): grid decode at strides 8/16/32, score obj*cls > 0.1, NMS 0.45."""

    size = 416

    def inputs(self, rng, n):
        return {"images": to_chw([gen.captcha(rng, self.size) for _ in range(n)], "bgr255")}, None

    def predict(self, path, feeds):
        raw = _run(path, feeds)[0]
        grids, strides = [], []
        for s in (8, 16, 32):
            g = self.size // s
            yy, xx = np.mgrid[0:g, 0:g]
            grids.append(np.stack([xx.ravel(), yy.ravel()], -1))
            strides.append(np.full((g * g, 1), s))
        grid, stride = np.concatenate(grids), np.concatenate(strides)
        result = []
        for p in raw:
            xy = (p[:, :2] + grid) * stride
            wh = np.exp(np.clip(p[:, 2:4], -10, 10)) * stride
            score = p[:, 4] * p[:, 5:].max(-1)
            keep = score > 0.1
            boxes = np.concatenate([xy - wh / 2, xy + wh / 2], -1)[keep]
            kept = judge.nms(boxes, score[keep], 0.45)
            result.append(boxes[kept].reshape(-1, 4))
        return result


class VADTask(Task):
    """Silero VAD: 512-sample chunks at 16 kHz with 64 samples of context and the recurrent state
    carried; decision = speech probability > 0.5 per chunk."""

    chunk, context = 512, 64

    def inputs(self, rng, n):
        return {"audio": np.stack([gen.audio_clip(rng) for _ in range(n)])}, None

    def fitting(self, rng, n):
        """Consecutive chunks of new clips as a stream meets them (16 per clip, from a random chunk
        on): each chunk with its context and the state the original carried into it. A stateful
        model's samples are (input, state) pairs from streaming: with the zero state alone a search
        never saw the state it runs on, and consecutive chunks let it roll candidates out on their
        own state (onnxfold.search.stream)."""
        per = min(n, 16)
        clips = -(-n // per)
        audio = np.stack([gen.audio_clip(rng) for _ in range(clips)]).astype(np.float32)
        chunks = (audio.shape[1] - self.chunk) // self.chunk + 1
        first = rng.integers(0, chunks - per + 1, clips)
        steps = list(self._stream(self.source, audio))
        xs, states = [], []
        for clip in range(clips):
            for step in range(first[clip], first[clip] + per):
                x, state, _ = steps[step]
                xs.append(x[clip])
                states.append(state[:, clip])
        return {
            "input": np.stack(xs[:n]),
            "state": np.stack(states[:n], 1).astype(np.float32),
            "sr": np.array(16000),
        }

    def _stream(self, path, audio):
        """(chunk with context, state entering it, speech probability) for every chunk of ``audio``
        [clips, samples], the state carried as the model runs."""
        from onnxfold.runtime.session import make_session

        session = make_session(str(path))
        n = len(audio)
        state = np.zeros((2, n, 128), np.float32)
        ctx = np.zeros((n, self.context), np.float32)
        for s in range(0, audio.shape[1] - self.chunk + 1, self.chunk):
            x = np.concatenate([ctx, audio[:, s : s + self.chunk]], 1)
            out, after = session.run(None, {"input": x, "state": state, "sr": np.array(16000, np.int64)})
            yield x, state, out[:, 0]
            state, ctx = after, x[:, -self.context :]

    def predict(self, path, feeds):
        probs = [p for _, _, p in self._stream(path, feeds["audio"].astype(np.float32))]
        decisions = np.stack(probs, 1) > 0.5
        return [tuple(bool(v) for v in row) for row in decisions]

    def compare(self, ref, got):
        r, g = np.array(ref), np.array(got)
        return {"agreement": float((r == g).mean()), "speech_frames_original": float(r.mean())}


class EmbeddingTask(Task):
    """all-MiniLM-L6-v2 sentence embeddings (bench minilm's export and pooling)."""

    def __init__(self, spec, source: Path) -> None:
        from transformers import AutoTokenizer

        self.model_dir = Path(source)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir))
        onnx_path = self.model_dir.parent / "minilm.onnx"
        if not onnx_path.exists():
            from onnxfold.bench.minilm import encoder_session_factory

            encoder_session_factory(self.model_dir, onnx_path)
        super().__init__(spec, onnx_path)

    def _feeds(self, sentences) -> dict[str, np.ndarray]:
        enc = self.tokenizer(list(sentences), padding=True, return_tensors="np")
        return {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}

    def inputs(self, rng, n):
        sentences = [gen.SENTENCES[i % len(gen.SENTENCES)] for i in range(n)]
        return self._feeds(sentences), None

    def fitting(self, rng, n):
        return self._feeds([gen.random_text(rng, 5, 12).capitalize() + "." for _ in range(n)])

    def predict(self, path, feeds):
        from onnxfold.bench.minilm import embeddings

        return list(embeddings(Path(path), feeds))

    def compare(self, ref, got):
        return {"agreement": judge.mean_cosine(np.array(ref), np.array(got))}


TASKS = {
    "ctc": CTCTask,
    "class": ClassTask,
    "db": DBTask,
    "picodet": PicoDetTask,
    "yolox": YOLOXTask,
    "vad": VADTask,
    "embedding": EmbeddingTask,
}


def make_task(spec, source: Path) -> Task:
    """The adapter of ``spec.task`` for the model at ``source``."""
    return TASKS[spec.task](spec, source)
