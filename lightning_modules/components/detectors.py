"""Detector builders (plain ``nn.Module``), all from scratch (``weights=None``).

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
ImageNet mean/std. ``num_classes`` counts the background (index 0).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torchvision.models import resnet50, vgg16
from torchvision.models.detection import FasterRCNN, fasterrcnn_resnet50_fpn
from torchvision.models.detection.anchor_utils import AnchorGenerator, DefaultBoxGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.ssd import SSD, _vgg_extractor
from torchvision.ops import MultiScaleRoIAlign

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
ONE_STAGE = ("ssd300_vgg16", "ssd512_vgg16", "ssd300_resnet50", "tiny_ssd")
TWO_STAGE = ("frcnn_vgg16", "fasterrcnn_resnet50_fpn", "tiny_frcnn")
ARCHS = ONE_STAGE + TWO_STAGE
#: default input size per architecture (SSD: fixed square; Faster R-CNN: shorter side)
DEFAULT_SIZE = {
    "ssd300_vgg16": 300,
    "ssd512_vgg16": 512,
    "ssd300_resnet50": 300,
    "tiny_ssd": 64,
    "frcnn_vgg16": 600,
    "fasterrcnn_resnet50_fpn": 800,
    "tiny_frcnn": 64,
}


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
    """Build ``arch`` with ``num_classes`` outputs (background included), untrained.

    Args:
        image_size: SSD input side (fixed square) or Faster R-CNN ``min_size``, in pixels;
            None uses :data:`DEFAULT_SIZE`.
        max_size: Faster R-CNN ``max_size`` (default ``image_size * 5 / 3``).
        score_thresh, nms_thresh, detections_per_img: post-processing (head NMS for two-stage).
        rpn_nms_thresh: two-stage RPN NMS IoU threshold.
        topk_candidates: SSD candidates per class before NMS.
        representation_size: width of the two fc layers of ``frcnn_vgg16``'s box head.
        anchor_sizes: ``frcnn_vgg16``/``tiny_frcnn`` anchor sides in pixels.
    """
    if arch not in ARCHS:
        raise ValueError(f"model.arch={arch!r}: choose one of {list(ARCHS)}.")
    size = int(image_size or DEFAULT_SIZE[arch])
    ssd_kw = dict(
        image_mean=MEAN,
        image_std=STD,
        score_thresh=score_thresh,
        nms_thresh=nms_thresh,
        detections_per_img=detections_per_img,
        topk_candidates=topk_candidates,
    )
    if arch == "ssd300_vgg16":
        backbone = _vgg_extractor(vgg16(weights=None), False, 5)
        return SSD(backbone, _ssd300_anchors(), (size, size), num_classes, **ssd_kw)
    if arch == "ssd512_vgg16":
        backbone = _vgg_extractor(vgg16(weights=None), True, 5)
        anchors = DefaultBoxGenerator(
            [[2], [2, 3], [2, 3], [2, 3], [2, 3], [2], [2]],
            scales=[0.07, 0.15, 0.3, 0.45, 0.6, 0.75, 0.9, 1.05],
            steps=[8, 16, 32, 64, 128, 256, 512],
        )
        return SSD(backbone, anchors, (size, size), num_classes, **ssd_kw)
    if arch == "ssd300_resnet50":
        return SSD(ResNet50SSDBackbone(), _ssd300_anchors(), (size, size), num_classes, **ssd_kw)
    if arch == "tiny_ssd":
        anchors = DefaultBoxGenerator([[2], [2], [2]], min_ratio=0.15, max_ratio=0.9)
        return SSD(TinyBackbone(), anchors, (size, size), num_classes, **ssd_kw)
    rcnn_kw = dict(
        min_size=size,
        max_size=int(max_size or size * 5 // 3),
        image_mean=MEAN,
        image_std=STD,
        rpn_nms_thresh=rpn_nms_thresh,
        box_nms_thresh=nms_thresh,
        box_score_thresh=score_thresh,
        box_detections_per_img=detections_per_img,
    )
    if arch == "fasterrcnn_resnet50_fpn":
        return fasterrcnn_resnet50_fpn(
            weights=None,
            weights_backbone=None,
            num_classes=num_classes,
            **rcnn_kw,
        )
    if arch == "frcnn_vgg16":
        body = vgg16(weights=None).features[:-1]  # conv5_3 + ReLU, stride 16
        backbone = _FirstMap(body, 512)
        sizes = tuple(anchor_sizes or (128, 256, 512))
        anchors = AnchorGenerator(sizes=(sizes,), aspect_ratios=((0.5, 1.0, 2.0),))
        pool = MultiScaleRoIAlign(["0"], output_size=7, sampling_ratio=2)
        head = TwoMLPHead(512 * 7 * 7, representation_size)
        return FasterRCNN(
            backbone,
            None,
            rpn_anchor_generator=anchors,
            box_roi_pool=pool,
            box_head=head,
            box_predictor=FastRCNNPredictor(representation_size, num_classes),
            **rcnn_kw,
        )
    # tiny_frcnn
    tiny = TinyBackbone()
    backbone = _FirstMap(tiny, tiny.first_channels)
    sizes = tuple(anchor_sizes or (8, 16, 32))
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
        **rcnn_kw,
    )


def is_two_stage(arch: str) -> bool:
    return arch in TWO_STAGE


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
