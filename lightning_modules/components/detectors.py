"""Detector builders (plain ``nn.Module``), all from scratch (``weights=None``), in a registry.

One documented builder ``(num_classes, DetectorOptions) -> nn.Module`` per architecture, registered
with :func:`register_detector`, which also records what the builder declares: DP-SGD support,
one or two stages, the default input size. :func:`build_detector` looks the name up
(:func:`detector_spec`); :func:`detector_names` lists the registered names.

=========================  ==================================================================
``ssd300_vgg16``           SSD300, VGG16 trunk via torchvision's ``_vgg_extractor`` (as
                           ``ssd300_vgg16`` builds it), 6 feature maps, 8732 default boxes
``ssd512_vgg16``           SSD512: the high-resolution VGG16 extractor, 7 feature maps
``ssd300_resnet50``        SSD300 on a ResNet50 trunk up to layer3 (layer3 at stride 1, 38x38),
                           plus 5 extra blocks (as NVIDIA's SSD300-ResNet50)
``frcnn_vgg16``            Faster R-CNN, VGG16 conv5_3 backbone (stride 16, 512 ch), RoIAlign
                           7x7, two fc layers (``representation_size``, 4096 as VGG's fc6/fc7)
``fasterrcnn_resnet50_fpn`` torchvision's builder
``tiny_ssd``               5-conv SSD for CPU tests and the demo (3 maps at strides 8/16/32)
``tiny_frcnn``             small two-stage model for CPU tests (stride 8, one anchor level)
=========================  ==================================================================

Inputs are lists of (3, H, W) float images in [0, 1]; the models normalise them with the
ImageNet mean/std. ``num_classes`` counts the background (index 0). Default sizes: SSD300 300,
SSD512 512, tiny 64 (fixed squares); Faster R-CNN VGG16 600, ResNet50-FPN 800 (shorter side).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.models import resnet50, vgg16
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection import fasterrcnn_resnet50_fpn as tv_fasterrcnn_resnet50_fpn
from torchvision.models.detection.anchor_utils import AnchorGenerator, DefaultBoxGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.ssd import SSD, _vgg_extractor
from torchvision.ops import MultiScaleRoIAlign

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _conv_bn(cin: int, cout: int, k: int, s: int = 1, p: int = 0) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, s, p, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _conv_relu(cin: int, cout: int, k: int, s: int = 1, p: int = 0) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, s, p), nn.ReLU(inplace=True)]


class ResNet50SSDBackbone(nn.Module):
    """ResNet50 conv1..layer3 (layer3 stride 1: 38x38x1024 at 300 px) + 5 extra blocks.

    Returns an OrderedDict of 6 maps: 38, 19, 10, 5, 3, 1 pixels at a 300 px input.
    """

    def __init__(self):
        super().__init__()
        r = resnet50(weights=None)
        first = r.layer3[0]
        first.conv2.stride = (1, 1)
        first.downsample[0].stride = (1, 1)
        self.trunk = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1, r.layer2, r.layer3)
        chans = [1024, 512, 512, 256, 256, 256]
        mids = [256, 256, 128, 128, 128]
        extras = []
        for i, (cin, cout, mid) in enumerate(zip(chans[:-1], chans[1:], mids)):
            # no batch-norm in the extras: the 3x3 and 1x1 maps would see one value per channel
            last = _conv_relu(mid, cout, 3, 2, 1) if i < 3 else _conv_relu(mid, cout, 3, 1, 0)
            extras.append(nn.Sequential(*_conv_relu(cin, mid, 1), *last))
        self.extras = nn.ModuleList(extras)

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        x = self.trunk(x)
        out = OrderedDict([("0", x)])
        for i, block in enumerate(self.extras):
            x = block(x)
            out[str(i + 1)] = x
        return out


class TinyBackbone(nn.Module):
    """Five stride-2 conv blocks; returns the maps at strides 8, 16 and 32 (64, 96, 128 ch)."""

    def __init__(self, width: int = 32):
        super().__init__()
        w = width
        self.stem = nn.Sequential(*_conv_bn(3, w // 2, 3, 2, 1), *_conv_bn(w // 2, w, 3, 2, 1))
        self.s8 = nn.Sequential(*_conv_bn(w, 2 * w, 3, 2, 1), *_conv_bn(2 * w, 2 * w, 3, 1, 1))
        self.s16 = nn.Sequential(*_conv_bn(2 * w, 3 * w, 3, 2, 1))
        self.s32 = nn.Sequential(*_conv_bn(3 * w, 4 * w, 3, 2, 1))
        self.first_channels = 2 * w  # channels of the stride-8 map

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        a = self.s8(self.stem(x))
        b = self.s16(a)
        return OrderedDict([("0", a), ("1", b), ("2", self.s32(b))])


class _FirstMap(nn.Module):
    def __init__(self, body: nn.Module, out_channels: int):
        super().__init__()
        self.body, self.out_channels = body, out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        y = self.body(x)
        return OrderedDict([("0", y["0"] if isinstance(y, dict) else y)])


def _ssd300_anchors() -> DefaultBoxGenerator:
    """SSD300's default boxes (6 feature maps), shared by the VGG16 and ResNet50 backbones."""
    return DefaultBoxGenerator(
        [[2], [2, 3], [2, 3], [2, 3], [2], [2]],
        scales=[0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05],
        steps=[8, 16, 32, 64, 100, 300],
    )


# ---- the registry ------------------------------------------------------------------------------
@dataclass(frozen=True)
class DetectorOptions:
    """What :func:`build_detector` hands every builder (see its arguments).

    Attributes:
        size: SSD input side (fixed square) or Faster R-CNN ``min_size``, in pixels.
        max_size: Faster R-CNN ``max_size`` in pixels (None: ``size * 5 / 3``).
    """

    size: int
    max_size: int | None = None
    score_thresh: float = 0.01
    nms_thresh: float = 0.45
    detections_per_img: int = 200
    rpn_nms_thresh: float = 0.7
    topk_candidates: int = 400
    representation_size: int = 4096
    anchor_sizes: tuple[int, ...] | None = None


@dataclass(frozen=True)
class DetectorSpec:
    """A registered architecture: its builder ``(num_classes, DetectorOptions) -> nn.Module`` and
    what the builder declares (DP-SGD support, one or two stages, default input size in px)."""

    name: str
    builder: Callable[[int, DetectorOptions], nn.Module]
    supports_dp: bool
    two_stage: bool
    default_size: int


_DETECTORS: dict[str, DetectorSpec] = {}


def register_detector(name: str, *, supports_dp: bool, two_stage: bool, default_size: int):
    """Decorator registering a builder ``(num_classes, DetectorOptions) -> nn.Module`` as ``name``.

    ``supports_dp``: per-sample DP-SGD can train it (:mod:`lightning_modules.dp.detection`);
    ``default_size``: input size in pixels when none is given. Refuses a name registered twice.
    """

    def decorate(builder: Callable[[int, DetectorOptions], nn.Module]):
        if name in _DETECTORS:
            raise ValueError(f"detector {name!r} is registered twice; pick another name.")
        _DETECTORS[name] = DetectorSpec(name, builder, supports_dp, two_stage, default_size)
        return builder

    return decorate


def detector_spec(arch: str) -> DetectorSpec:
    """The registered ``arch``; an unknown name raises a ``ValueError`` listing the choices."""
    if arch not in _DETECTORS:
        raise ValueError(f"model.arch={arch!r}: choose one of {list(_DETECTORS)}.")
    return _DETECTORS[arch]


def detector_names(
    *, two_stage: bool | None = None, supports_dp: bool | None = None
) -> tuple[str, ...]:
    """Registered architectures in registration order, optionally filtered by a declared flag."""
    return tuple(
        name
        for name, spec in _DETECTORS.items()
        if (two_stage is None or spec.two_stage == two_stage)
        and (supports_dp is None or spec.supports_dp == supports_dp)
    )


def build_detector(
    arch: str,
    num_classes: int,
    image_size: int | None = None,
    max_size: int | None = None,
    score_thresh: float = 0.01,
    nms_thresh: float = 0.45,
    detections_per_img: int = 200,
    rpn_nms_thresh: float = 0.7,
    topk_candidates: int = 400,
    representation_size: int = 4096,
    anchor_sizes: tuple[int, ...] | None = None,
) -> nn.Module:
    """Build the registered ``arch`` with ``num_classes`` outputs (background included), untrained.

    Args:
        image_size: SSD input side (fixed square) or Faster R-CNN ``min_size``, in pixels;
            None uses the arch's registered ``default_size``.
        max_size: Faster R-CNN ``max_size`` (default ``image_size * 5 / 3``).
        score_thresh, nms_thresh, detections_per_img: post-processing (head NMS for two-stage).
        rpn_nms_thresh: two-stage RPN NMS IoU threshold.
        topk_candidates: SSD candidates per class before NMS.
        representation_size: width of the two fc layers of ``frcnn_vgg16``'s box head.
        anchor_sizes: ``frcnn_vgg16``/``tiny_frcnn`` anchor sides in pixels.
    """
    spec = detector_spec(arch)
    opts = DetectorOptions(
        size=int(image_size or spec.default_size),
        max_size=max_size,
        score_thresh=score_thresh,
        nms_thresh=nms_thresh,
        detections_per_img=detections_per_img,
        rpn_nms_thresh=rpn_nms_thresh,
        topk_candidates=topk_candidates,
        representation_size=representation_size,
        anchor_sizes=anchor_sizes,
    )
    return spec.builder(num_classes, opts)


# ---- the builders ------------------------------------------------------------------------------
def _ssd(backbone: nn.Module, anchors: DefaultBoxGenerator, num_classes: int, o: DetectorOptions):
    """torchvision ``SSD`` at a fixed ``o.size`` square input with the options' post-processing."""
    return SSD(
        backbone,
        anchors,
        (o.size, o.size),
        num_classes,
        image_mean=MEAN,
        image_std=STD,
        score_thresh=o.score_thresh,
        nms_thresh=o.nms_thresh,
        detections_per_img=o.detections_per_img,
        topk_candidates=o.topk_candidates,
    )


def _rcnn_kwargs(o: DetectorOptions) -> dict:
    """Faster R-CNN transform and post-processing keyword arguments from the options."""
    return dict(
        min_size=o.size,
        max_size=int(o.max_size or o.size * 5 // 3),
        image_mean=MEAN,
        image_std=STD,
        rpn_nms_thresh=o.rpn_nms_thresh,
        box_nms_thresh=o.nms_thresh,
        box_score_thresh=o.score_thresh,
        box_detections_per_img=o.detections_per_img,
    )


@register_detector("ssd300_vgg16", supports_dp=True, two_stage=False, default_size=300)
def ssd300_vgg16(num_classes: int, o: DetectorOptions) -> SSD:
    """SSD300: VGG16 trunk via torchvision's ``_vgg_extractor``, 6 maps, 8732 default boxes."""
    backbone = _vgg_extractor(vgg16(weights=None), False, 5)
    return _ssd(backbone, _ssd300_anchors(), num_classes, o)


@register_detector("ssd512_vgg16", supports_dp=True, two_stage=False, default_size=512)
def ssd512_vgg16(num_classes: int, o: DetectorOptions) -> SSD:
    """SSD512: the high-resolution VGG16 extractor, 7 feature maps."""
    backbone = _vgg_extractor(vgg16(weights=None), True, 5)
    anchors = DefaultBoxGenerator(
        [[2], [2, 3], [2, 3], [2, 3], [2, 3], [2], [2]],
        scales=[0.07, 0.15, 0.3, 0.45, 0.6, 0.75, 0.9, 1.05],
        steps=[8, 16, 32, 64, 128, 256, 512],
    )
    return _ssd(backbone, anchors, num_classes, o)


@register_detector("ssd300_resnet50", supports_dp=True, two_stage=False, default_size=300)
def ssd300_resnet50(num_classes: int, o: DetectorOptions) -> SSD:
    """SSD300 on :class:`ResNet50SSDBackbone` with SSD300's default boxes."""
    return _ssd(ResNet50SSDBackbone(), _ssd300_anchors(), num_classes, o)


@register_detector("tiny_ssd", supports_dp=True, two_stage=False, default_size=64)
def tiny_ssd(num_classes: int, o: DetectorOptions) -> SSD:
    """5-conv SSD on :class:`TinyBackbone` (3 maps at strides 8/16/32) for CPU tests and demos."""
    anchors = DefaultBoxGenerator([[2], [2], [2]], min_ratio=0.15, max_ratio=0.9)
    return _ssd(TinyBackbone(), anchors, num_classes, o)


@register_detector("frcnn_vgg16", supports_dp=False, two_stage=True, default_size=600)
def frcnn_vgg16(num_classes: int, o: DetectorOptions) -> FasterRCNN:
    """Faster R-CNN on VGG16 conv5_3 (stride 16, 512 ch), RoIAlign 7x7, two fc layers of
    ``o.representation_size`` (4096 as VGG's fc6/fc7); anchors ``o.anchor_sizes`` (128-512)."""
    body = vgg16(weights=None).features[:-1]  # conv5_3 + ReLU, stride 16
    backbone = _FirstMap(body, 512)
    sizes = tuple(o.anchor_sizes or (128, 256, 512))
    anchors = AnchorGenerator(sizes=(sizes,), aspect_ratios=((0.5, 1.0, 2.0),))
    pool = MultiScaleRoIAlign(["0"], output_size=7, sampling_ratio=2)
    head = TwoMLPHead(512 * 7 * 7, o.representation_size)
    return FasterRCNN(
        backbone,
        None,
        rpn_anchor_generator=anchors,
        box_roi_pool=pool,
        box_head=head,
        box_predictor=FastRCNNPredictor(o.representation_size, num_classes),
        **_rcnn_kwargs(o),
    )


@register_detector("fasterrcnn_resnet50_fpn", supports_dp=False, two_stage=True, default_size=800)
def fasterrcnn_resnet50_fpn(num_classes: int, o: DetectorOptions) -> FasterRCNN:
    """torchvision's Faster R-CNN ResNet50-FPN builder, from scratch."""
    return tv_fasterrcnn_resnet50_fpn(
        weights=None,
        weights_backbone=None,
        num_classes=num_classes,
        **_rcnn_kwargs(o),
    )


@register_detector("tiny_frcnn", supports_dp=False, two_stage=True, default_size=64)
def tiny_frcnn(num_classes: int, o: DetectorOptions) -> FasterRCNN:
    """Small two-stage model for CPU tests: :class:`TinyBackbone`'s stride-8 map, one anchor
    level (``o.anchor_sizes``, default 8/16/32 px), a 128-wide box head."""
    tiny = TinyBackbone()
    backbone = _FirstMap(tiny, tiny.first_channels)
    sizes = tuple(o.anchor_sizes or (8, 16, 32))
    anchors = AnchorGenerator(sizes=(sizes,), aspect_ratios=((0.5, 1.0, 2.0),))
    pool = MultiScaleRoIAlign(["0"], output_size=7, sampling_ratio=2)
    return FasterRCNN(
        backbone,
        None,
        rpn_anchor_generator=anchors,
        box_roi_pool=pool,
        box_head=TwoMLPHead(tiny.first_channels * 49, 128),
        box_predictor=FastRCNNPredictor(128, num_classes),
        rpn_pre_nms_top_n_train=300,
        rpn_post_nms_top_n_train=150,
        rpn_pre_nms_top_n_test=300,
        rpn_post_nms_top_n_test=150,
        rpn_batch_size_per_image=64,
        box_batch_size_per_image=64,
        **_rcnn_kwargs(o),
    )


def set_postprocess(
    model: nn.Module,
    score_thresh: float,
    nms_thresh: float,
    max_boxes: int,
    rpn_nms_thresh: float | None = None,
) -> dict:
    """Set post-processing thresholds in place; returns the previous values (same keys).

    One-stage (SSD): score threshold, NMS IoU (1.0 = off), boxes kept. Two-stage: the same for
    the box head, plus the RPN NMS IoU. An Opacus wrapper (DP-SGD) is looked through.
    """
    model = getattr(model, "_module", model)
    if isinstance(model, SSD):
        old = dict(
            score_thresh=model.score_thresh,
            nms_thresh=model.nms_thresh,
            max_boxes=model.detections_per_img,
        )
        model.score_thresh, model.nms_thresh = score_thresh, nms_thresh
        model.detections_per_img = max_boxes
        return old
    if isinstance(model, FasterRCNN):
        rh = model.roi_heads
        old = dict(
            score_thresh=rh.score_thresh,
            nms_thresh=rh.nms_thresh,
            max_boxes=rh.detections_per_img,
            rpn_nms_thresh=model.rpn.nms_thresh,
        )
        rh.score_thresh, rh.nms_thresh, rh.detections_per_img = score_thresh, nms_thresh, max_boxes
        if rpn_nms_thresh is not None:
            model.rpn.nms_thresh = rpn_nms_thresh
        return old
    raise TypeError(f"unsupported detector type {type(model).__name__}")
