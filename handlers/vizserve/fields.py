"""The options of a request itself, whatever its modes: the input, the modes asked, the answer's format, a video's
sampling, and a job's poll and cancel. Declared here, apart from the request parser, so that the modes (``describe``
lists the video options) can import them without importing the parser that imports the modes.
"""

from __future__ import annotations

from .animate import ANIMATION_FORMATS
from .options import Option

__all__ = ["ANIMATED", "GLOBAL_OPTIONS", "JOB_FIELDS", "NO_STREAM", "VIDEO_INPUT"]

DATA = Option("data", "text", None, "the input", default_text="(none)", allowed_text="an image file Pillow reads "
              "(JPEG, PNG, GIF, WebP, BMP, TIFF, ...; in JSON as base64, a data: URL too), or a .npy float32 array "
              "[3, H, W] already normalized, used exactly as given")  # fmt: skip
MODE = Option("mode", "names", "classify", "what to compute; classify runs whenever an input is given",
              allowed_text="a comma list of the modes above")  # fmt: skip
FORMAT = Option("format", "choice", "json", "png: answer with the first picture itself (image/png); for video "
                "models webp, apng, gif or mp4: the first animation itself (JSON answers carry WebP animations)",
                choices=("json", "png", *ANIMATION_FORMATS))  # fmt: skip
RAW = Option("raw", "bool", False, "add the arrays as base64 .npy float32 (feature maps, maps, images)")
FRAMES = Option("frames", "int", lambda s: s.spec.input_shape[1] if s.spec.modality == "video" else None,
                "video models: frames sampled from the video", 1, 64,
                default_text="the model's clip length (16 for R3D-18)")  # fmt: skip
START = Option("start", "float", 0.0, "video models: where the clip starts in the video, in seconds", 0.0, 36_000.0)
CLIP = Option("clip", "float", None, "video models: seconds the frames are sampled evenly over", 0.0, 600.0,
              default_text="frames / the model's frame rate (16 / 15 s for R3D-18)", above=True)  # fmt: skip
JOB = Option("job", "text", None, "poll an optimization job: its progress while it runs (202), then its answer; "
             "sent alone", default_text="(none)", allowed_text="the ID a 202 answer gave")  # fmt: skip
CANCEL = Option("cancel", "bool", False, "with 'job' (and nothing else): end that job before its next step; "
                "polls then answer what it has, marked stopped_early")  # fmt: skip
#: Options every request may carry, whatever its modes (frames, start and clip: video models only).
GLOBAL_OPTIONS = (DATA, MODE, FORMAT, RAW, FRAMES, START, CLIP, JOB, CANCEL)
#: A job's own requests: a poll (``job`` alone) and a cancel (``job`` and ``cancel``).
JOB_FIELDS = ({"job"}, {"job", "cancel"})
#: actmax and invert run as jobs now: a request that still asks to stream is told how to follow one.
NO_STREAM = (
    "option 'stream' is gone: actmax and invert run as jobs beside the request path; the request is answered at "
    "once (202) with a job ID, and a POST of field 'job' with that ID alone answers the progress (with a preview) "
    "while it runs and the result when it is done"
)
VIDEO_INPUT = (FRAMES, START, CLIP)
#: Modes whose entries carry an animation for a clip, in the order format=webp|apng|gif|mp4 picks the first.
ANIMATED = ("gradcam", "saliency", "actmax", "featuremaps")
