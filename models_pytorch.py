"""StegaStamp networks (encoder, decoder with STN, WGAN critic), their config, and checkpoints.

A layer-by-layer port of the TF 1.13 models.py (StegaStampEncoder, StegaStampDecoder, Discriminator): same widths,
kernels, strides, activations, initialisers, the -0.5 input shift and TF 'same' padding, so the parameter counts at
400x400 equal the released model's (its variables file). Sizes are derived from ModelConfig; nothing is tied to 400x400.

    cfg = ModelConfig()                                   # 400x400, 100 bits
    enc, dec = StegaStampEncoder(cfg), StegaStampDecoder(cfg)
    residual = enc(secret, image)                         # (B, L) in {0,1}, (B, 3, H, W) in [0,1] -> (B, 3, H, W)
    logits = dec(torch.clamp(image + residual, 0, 1))     # (B, L) logits; bits = (logits > 0)
    save_checkpoint("ckpt.pt", cfg, enc, dec)
    cfg, enc, dec = load_checkpoint("ckpt.pt", device="cpu")
"""
import copy
import math
import os
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from image_io import atomic_write
from inference import ModelLoadError

CHECKPOINT_FORMAT_VERSION = 1


#################################################################################
#                                     Config                                    #
#################################################################################

@dataclass(frozen=True)
class ModelConfig:
    """Everything inference needs to rebuild the networks and read the secret. Travels inside every checkpoint."""
    secret_size: int = 100    # L, bits the encoder hides (the released model and base.sh use 100)
    height: int = 400         # model input size; any multiple of 16 (see __post_init__)
    width: int = 400
    data_bytes: int = 7       # secret codec: UTF-8 bytes of text per message
    bch_t: int = 5            # BCH correctable bit errors
    bch_prim_poly: int = 137  # BCH primitive polynomial, x^7 + x^3 + 1 -> GF(2^7), n = 127
    code: str = "bch_100"     # name of the message code (secret_codec.CODES), or "custom"
    residual_bound: float = 0.0   # > 0: residual = b * tanh(raw / b), so |residual| < b (our addition); 0: unbounded

    def __post_init__(self):
        # The secret is a (3, H/8, W/8) map upsampled x8, and the U-Net goes down four stride-2 convs and back up
        # with x2 upsampling, so H/16 must be an integer for the skip connections to line up.
        for name in ("height", "width"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 16 or v % 16:
                raise ValueError(f"ModelConfig.{name}={v!r}: must be a multiple of 16 (>= 16)")
        if self.secret_size < 1:
            raise ValueError(f"ModelConfig.secret_size={self.secret_size!r}: must be positive")
        if not self.residual_bound >= 0:
            raise ValueError(f"ModelConfig.residual_bound={self.residual_bound!r}: must be >= 0 (0: unbounded)")

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """Rebuild from asdict(); unknown keys are an error (a checkpoint from a different code version)."""
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown model_config keys {sorted(unknown)}")
        return cls(**d)


#################################################################################
#                                 Building blocks                               #
#################################################################################

def same_pad(size: int, kernel: int, stride: int):
    """TF 'same' padding along one axis -> (before, after). TF puts the odd pixel after (bottom/right)."""
    out = (size + stride - 1) // stride  # ceil, with no negative floor division (ONNX integer Div truncates)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def same_out(size: int, n_stride2: int) -> int:
    """Spatial size after n stride-2 'same' convs: ceil(size / 2) applied n times."""
    for _ in range(n_stride2):
        size = (size + 1) // 2
    return size


class Conv2dSame(nn.Conv2d):
    """nn.Conv2d with TensorFlow 'same' padding, optionally followed by ReLU.

    PyTorch's padding=1 pads both sides; for stride 2 on even sizes TF pads 0 before and 1 after
    (tf.layers.Conv2D padding='same').
    Matching it keeps the sampling grid of the original, so ported TF weights produce the same outputs.
    """

    def __init__(self, in_ch, out_ch, kernel, stride=1, relu=True):
        super().__init__(in_ch, out_ch, kernel, stride=stride, padding=0)
        self.relu = relu

    def forward(self, x):
        # Python ints, so an ONNX export records the padding as constants (H and W are fixed per model) instead of
        # shape arithmetic.
        h, w = int(x.shape[-2]), int(x.shape[-1])
        top, bottom = same_pad(h, self.kernel_size[0], self.stride[0])
        left, right = same_pad(w, self.kernel_size[1], self.stride[1])
        if top == bottom and left == right:    # symmetric (every stride-1 3x3): the convolution pads itself, no copy
            x = F.conv2d(x, self.weight, self.bias, self.stride, (top, left))
        else:
            x = super().forward(F.pad(x, (left, right, top, bottom)))
        return F.relu(x) if self.relu else x


def widen_inputs(conv: Conv2dSame, extra: int) -> Conv2dSame:
    """A copy of conv that reads `extra` more input channels (appended last) with zero weights: the same outputs."""
    wide = Conv2dSame(conv.in_channels + extra, conv.out_channels, conv.kernel_size[0], conv.stride[0], conv.relu)
    wide = wide.to(conv.weight)
    with torch.no_grad():
        wide.weight.zero_()
        wide.weight[:, :conv.in_channels] = conv.weight
        wide.bias.copy_(conv.bias)
    return wide


def like(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """x in ref's dtype and, when ref is channels_last, in that memory layout (a no-op when it already is)."""
    x = x.to(ref.dtype)
    if ref.is_contiguous(memory_format=torch.channels_last) and not ref.is_contiguous():
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def check_input(image: torch.Tensor, cfg: ModelConfig, who: str):
    """Fail with a readable message (not a matmul shape error) when an image does not match the model size."""
    if image.dim() != 4 or tuple(image.shape[1:]) != (3, cfg.height, cfg.width):
        raise ValueError(f"{who} expects images of shape (B, 3, {cfg.height}, {cfg.width}), got {tuple(image.shape)}")


def he_normal_(w: torch.Tensor):
    """Keras he_normal as in TF 1.13: truncated normal (±2 std), std = sqrt(2 / fan_in) / 0.8796 (truncation fix)."""
    fan_in = w[0].numel() if w.dim() > 1 else w.numel()
    std = math.sqrt(2.0 / fan_in) / 0.87962566103423978
    nn.init.trunc_normal_(w, 0.0, std, -2 * std, 2 * std)


def init_weights(module: nn.Module, scheme: str):
    """Keras-style init for every conv/linear in `module`: 'he_normal' or 'glorot_uniform', zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if scheme == "he_normal":
                he_normal_(m.weight)
            else:
                nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)


def flatten_hwc(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W*C) in TF's NHWC flatten order, so Dense weights keep the TF layout."""
    return x.permute(0, 2, 3, 1).flatten(1)


#################################################################################
#                                     Encoder                                   #
#################################################################################

class StegaStampEncoder(nn.Module):
    """(secret (B, L) in {0,1}, image (B, 3, H, W) in [0,1]) -> unbounded residual (B, 3, H, W). Port of models.py."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.secret_hw = (cfg.height // 8, cfg.width // 8)   # 50x50 at 400
        self.secret_dense = nn.Linear(cfg.secret_size, 3 * self.secret_hw[0] * self.secret_hw[1])
        self.up_secret = nn.Upsample(scale_factor=8, mode="nearest")
        self.up2 = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv1 = Conv2dSame(6, 32, 3)
        self.conv2 = Conv2dSame(32, 32, 3, 2)
        self.conv3 = Conv2dSame(32, 64, 3, 2)
        self.conv4 = Conv2dSame(64, 128, 3, 2)
        self.conv5 = Conv2dSame(128, 256, 3, 2)
        self.up6 = Conv2dSame(256, 128, 2)   # the up-convs are 2x2 'same' after nearest x2
        self.conv6 = Conv2dSame(256, 128, 3)
        self.up7 = Conv2dSame(128, 64, 2)
        self.conv7 = Conv2dSame(128, 64, 3)
        self.up8 = Conv2dSame(64, 32, 2)
        self.conv8 = Conv2dSame(64, 32, 3)
        self.up9 = Conv2dSame(32, 32, 2)
        self.conv9 = Conv2dSame(32 + 32 + 6, 32, 3)
        # conv10 is dead in the original: computed from conv9 but the residual reads conv9. We keep its weights so the
        # state_dict mirrors the TF variable set (and the parameter count is the released model's), never run it
        # (saves a full-resolution conv), and freeze it so optimizers and DDP ignore it.
        self.conv10 = Conv2dSame(32, 32, 3)
        self.residual = Conv2dSame(32, 3, 1, relu=False)
        init_weights(self, "he_normal")
        self.conv10.requires_grad_(False)
        self.input_pad = 0   # zero channels appended to the 6 input channels (channel_aligned)
        # cfg.residual_bound > 0: the bound b of residual = b * tanh(raw / b). A buffer, not a parameter: training
        # anneals it in place (train_pytorch.py --residual_bound); kept out of the state_dict, which stays the
        # original's variable set -- the checkpoint's model config carries the value.
        self.register_buffer("bound", torch.tensor(float(cfg.residual_bound)), persistent=False)

    def channel_aligned(self, multiple: int = 8) -> "StegaStampEncoder":
        """A copy that computes the same function, with the 6 input channels (secret + image) padded by zero
        channels to a multiple of `multiple`, and zero weights for them in the two convolutions that read them (conv1:
        6 -> 8 inputs, conv9: 70 -> 72). For export: ONNX Runtime's convolutions are much faster on such channel
        counts (measured in README_PYTORCH.md, 'ONNX export and inference'); the outputs are the same (the int8
        model's bit for bit, fp32 within rounding). Its state_dict has the widened shapes."""
        aligned = copy.deepcopy(self)
        extra = -6 % multiple
        if extra:
            aligned.input_pad = extra
            aligned.conv1, aligned.conv9 = widen_inputs(self.conv1, extra), widen_inputs(self.conv9, extra)
        return aligned

    def forward(self, secret, image):
        """secret (B, L) in {0,1}, image (B, 3, H, W) in [0,1] -> residual (B, 3, H, W): unbounded and unclipped as
        the original, or b * tanh(raw / b) with cfg.residual_bound = b > 0."""
        check_input(image, self.cfg, "encoder")
        B = secret.shape[0]
        s = F.relu(self.secret_dense(secret - 0.5))               # (B, 3*H/8*W/8)
        # TF reshapes the Dense output as (H/8, W/8, 3) HWC; keep that order so TF weights port unchanged.
        s = s.view(B, self.secret_hw[0], self.secret_hw[1], 3).permute(0, 3, 1, 2)  # (B, 3, H/8, W/8)
        s = self.up_secret(s)                                      # (B, 3, H, W)
        inputs = torch.cat([s, image - 0.5], dim=1)                # (B, 6, H, W), secret channels first
        if self.input_pad:                                         # channel_aligned(): zero channels last
            inputs = F.pad(inputs, (0, 0, 0, 0, 0, self.input_pad))
        c1 = self.conv1(inputs)                                    # (B, 32, H, W)
        c2 = self.conv2(c1)                                        # (B, 32, H/2, W/2)
        c3 = self.conv3(c2)                                        # (B, 64, H/4, W/4)
        c4 = self.conv4(c3)                                        # (B, 128, H/8, W/8)
        c5 = self.conv5(c4)                                        # (B, 256, H/16, W/16)
        c6 = self.conv6(torch.cat([c4, self.up6(self.up2(c5))], 1))  # (B, 256 -> 128, H/8, W/8)
        c7 = self.conv7(torch.cat([c3, self.up7(self.up2(c6))], 1))  # (B, 128 -> 64, H/4, W/4)
        c8 = self.conv8(torch.cat([c2, self.up8(self.up2(c7))], 1))  # (B, 64 -> 32, H/2, W/2)
        # inputs in the activations' dtype and memory layout: else torch.cat makes the 70-channel full-resolution
        # tensor float32 (under bf16 autocast) or NCHW (channels_last weights, NCHW image), and conv9 copies it
        # back, forward and backward. Same values either way.
        c9 = self.conv9(torch.cat([c1, self.up9(self.up2(c8)), like(inputs, c1)], 1))  # (B, 70 -> 32, H, W)
        residual = self.residual(c9)                               # (B, 3, H, W), linear
        if self.cfg.residual_bound > 0:                            # our addition: |residual| < bound, ~linear below
            residual = self.bound * torch.tanh(residual / self.bound)
        return residual


#################################################################################
#                                     Decoder                                   #
#################################################################################

class StegaStampDecoder(nn.Module):
    """image (B, 3, H, W) in [0,1] -> secret logits (B, L). STN (identity at init) followed by a CNN. Port of models.py.

    The STN warp uses affine_grid/grid_sample semantics (align_corners=True, border padding), the close analogue of
    the pip `stn` sampler the original used; that sampler's (W-2)/2 scaling shrinks even the identity by 398/399,
    which matters only for bit-exact decoding of TF weights (tf.layers.Conv2D padding='same'), not for training.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        H, W = cfg.height, cfg.width
        self.stn_convs = nn.Sequential(Conv2dSame(3, 32, 3, 2), Conv2dSame(32, 64, 3, 2), Conv2dSame(64, 128, 3, 2))
        stn_flat = 128 * same_out(H, 3) * same_out(W, 3)   # 400->200->100->50: 50*50*128 = 320000
        self.stn_dense = nn.Linear(stn_flat, 128)
        self.stn_theta = nn.Linear(128, 6)
        self.convs = nn.Sequential(
            Conv2dSame(3, 32, 3, 2), Conv2dSame(32, 32, 3), Conv2dSame(32, 64, 3, 2), Conv2dSame(64, 64, 3),
            Conv2dSame(64, 64, 3, 2), Conv2dSame(64, 128, 3, 2), Conv2dSame(128, 128, 3, 2))
        flat = 128 * same_out(H, 5) * same_out(W, 5)       # 400->200->100->50->25->13: 13*13*128 = 21632
        self.dense = nn.Linear(flat, 512)
        self.logits = nn.Linear(512, cfg.secret_size)
        init_weights(self, "glorot_uniform")
        # The STN starts as the identity: zero weights, bias = [1,0,0, 0,1,0] (tf.Variables in the original).
        nn.init.zeros_(self.stn_theta.weight)
        with torch.no_grad():
            self.stn_theta.bias.copy_(torch.tensor([1.0, 0, 0, 0, 1.0, 0]))
        # Pixel indices (x, y) of every output pixel, kept as integers so that model.to(bfloat16) cannot round them:
        # in bf16, coordinates in [-1, 1] are only good to ~1 px at 400 px, enough to break decoding.
        gy, gx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
        self.register_buffer("pixel_grid", torch.stack([gx, gy], -1).view(1, H * W, 2).int(), persistent=False)

    def stn(self, x):
        """x (B, 3, H, W), already shifted by -0.5 -> warped x. A hand-built affine grid also exports to ONNX < 20."""
        B, C, H, W = x.shape
        h = F.relu(self.stn_dense(flatten_hwc(self.stn_convs(x))))     # (B, 128)
        theta = self.stn_theta(h).view(B, 2, 3)                         # (B, 2, 3) affine, output -> input coords
        with torch.autocast(x.device.type, enabled=False):             # the sampling grid always in fp32
            scale = torch.tensor([2.0 / max(W - 1, 1), 2.0 / max(H - 1, 1)], device=x.device)
            xy = self.pixel_grid.float() * scale - 1                    # (1, H*W, 2) in [-1, 1], align_corners=True
            base = torch.cat([xy, torch.ones_like(xy[..., :1])], -1)   # (1, H*W, 3) homogeneous
            grid = torch.bmm(base.expand(B, -1, -1), theta.float().transpose(1, 2))  # (B, H*W, 2) as (x, y)
            out = F.grid_sample(x.float(), grid.view(B, H, W, 2), mode="bilinear", padding_mode="border",
                                align_corners=True)
        return out.to(x.dtype)

    def forward(self, image):
        """image (B, 3, H, W) in [0,1] -> logits (B, L). Bits are (logits > 0); sigmoid only at the deploy boundary."""
        check_input(image, self.cfg, "decoder")
        x = self.stn(image - 0.5)                          # (B, 3, H, W)
        x = flatten_hwc(self.convs(x))                     # (B, 13*13*128) at 400
        return self.logits(F.relu(self.dense(x)))          # (B, L)


#################################################################################
#                                 Critic (WGAN)                                 #
#################################################################################

class Discriminator(nn.Module):
    """image (B, 3, H, W) in [0,1] -> (scalar mean score, heat-map (B, 1, H/16, W/16)). Port of models.py."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.convs = nn.Sequential(
            Conv2dSame(3, 8, 3, 2), Conv2dSame(8, 16, 3, 2), Conv2dSame(16, 32, 3, 2), Conv2dSame(32, 64, 3, 2),
            Conv2dSame(64, 1, 3, relu=False))
        init_weights(self, "glorot_uniform")

    def forward(self, image):
        heat = self.convs(image - 0.5)       # (B, 1, H/16, W/16)
        return heat.mean(), heat             # one scalar over batch and space, as the original


#################################################################################
#                                 Stamp detector                                #
#################################################################################

@dataclass(frozen=True)
class DetectorConfig:
    """The stamp detector's shape. Travels inside its checkpoint and its ONNX export."""
    width: int = 16           # channels of the first stage; the four stages have 1x, 2x, 3x, 4x
    input_side: int = 384     # the long side frames are resized to before detection (short side: multiple of 16)
    zoom: float = 0.0         # 0: a frame detector; > 1: a zoom detector, which sees one candidate quad's view
                              # (detect_decode.zoom_view: the quad filling the central 1/zoom of an input_side square)

    def __post_init__(self):
        if self.width < 4 or self.input_side < 64 or self.input_side % 16:
            raise ValueError(f"DetectorConfig{(self.width, self.input_side)}: width >= 4, input_side a multiple "
                             "of 16 (>= 64)")
        if self.zoom != 0 and not 1 < self.zoom <= 4:
            raise ValueError(f"DetectorConfig zoom={self.zoom}: 0 (a frame detector) or in (1, 4]")


def conv_bn(cin, cout, stride=1, dilation=1):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, dilation, dilation, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class StampDetector(nn.Module):
    """Where are the stamps? frame (B, 3, H, W) in [0,1], H and W multiples of 16 -> mask logits (B, 1, H, W).

    A small U-Net (0.31 M parameters at width 16): four stride-2 stages (/2 .. /16), a dilated context
    block at /16 that sees the whole frame (a photo is told from its surroundings by its outline), and an upsampling
    path with skip connections back to /2; the logits are upsampled bilinearly to the input size. Our design, not
    the original's BiSeNet (whose training code was never released): BiSeNet starts from an ImageNet backbone, which
    cannot be downloaded here; this one trains from scratch on synthetic camera scenes (train_detector.py), and with
    decoding runs at 15 fps at 720p on 2 CPU cores (evaluate_detector.py).
    """

    def __init__(self, cfg: DetectorConfig = DetectorConfig()):
        super().__init__()
        self.cfg = cfg
        c1, c2, c3, c4 = (cfg.width * k for k in (1, 2, 3, 4))
        self.down = nn.ModuleList([nn.Sequential(conv_bn(3, c1, 2), conv_bn(c1, c1)),
                                   nn.Sequential(conv_bn(c1, c2, 2), conv_bn(c2, c2)),
                                   nn.Sequential(conv_bn(c2, c3, 2), conv_bn(c3, c3)),
                                   nn.Sequential(conv_bn(c3, c4, 2), conv_bn(c4, c4))])
        self.context = nn.Sequential(conv_bn(c4, c4, dilation=2), conv_bn(c4, c4, dilation=4),
                                     conv_bn(c4, c4, dilation=8))
        self.up = nn.ModuleList([conv_bn(c4 + c3, c3), conv_bn(c3 + c2, c2), conv_bn(c2 + c1, c1)])
        self.head = nn.Conv2d(c1, 1, 1)

    def forward(self, frame):
        if frame.dim() != 4 or frame.shape[1] != 3 or frame.shape[2] % 16 or frame.shape[3] % 16:
            raise ValueError(f"StampDetector expects frames (B, 3, H, W) with H, W multiples of 16, got "
                             f"{tuple(frame.shape)}")
        x, skips = frame - 0.5, []
        for stage in self.down:
            x = stage(x)
            skips.append(x)
        x = x + self.context(x)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            x = block(torch.cat([F.interpolate(x, size=skip.shape[2:], mode="bilinear", align_corners=False),
                                 skip], 1))
        return F.interpolate(self.head(x), size=frame.shape[2:], mode="bilinear", align_corners=False)


def count_parameters(module: nn.Module) -> int:
    """All parameters, frozen ones included (conv10 counts, as in the TF variable set)."""
    return sum(p.numel() for p in module.parameters())


#################################################################################
#                                   Checkpoints                                 #
#################################################################################

class CheckpointError(ModelLoadError):
    """A checkpoint is missing, corrupt, or does not match this code. The message is one line naming the file."""


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module under torch.compile (_orig_mod) and DDP (.module) wrappers, so saved keys never carry prefixes."""
    module = getattr(module, "_orig_mod", module)
    module = getattr(module, "module", module)
    return getattr(module, "_orig_mod", module)


def atomic_torch_save(obj, path):
    """torch.save to a temp file in the same folder, then os.replace: a crash never leaves a half-written file."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp), ".pt")


def save_checkpoint(path, cfg: ModelConfig, encoder, decoder, discriminator=None, opt_g=None, opt_d=None,
                    step: int = 0, train_args: dict = None, **extra):
    """Write a self-describing checkpoint (primitives and state_dicts only, loadable with weights_only=True).

    `extra` holds further primitives/tensors a trainer needs to resume (e.g. RNG states).
    """
    ckpt = {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "model_config": asdict(cfg),
        "encoder": unwrap(encoder).state_dict(),
        "decoder": unwrap(decoder).state_dict(),
        "discriminator": unwrap(discriminator).state_dict() if discriminator is not None else None,
        "opt_g": opt_g.state_dict() if opt_g is not None else None,
        "opt_d": opt_d.state_dict() if opt_d is not None else None,
        "step": int(step),
        "train_args": dict(train_args or {}),
        **extra,
    }
    atomic_torch_save(ckpt, path)


def checkpoint_kind(ckpt: dict) -> str:
    """'detector' for a train_detector.py checkpoint, else 'stegastamp' (encoder + decoder)."""
    return "detector" if "detector_config" in ckpt else "stegastamp"


def read_checkpoint(path, map_location="cpu", kind="stegastamp") -> dict:
    """Load and validate a checkpoint dict (weights_only=True) of `kind` ('stegastamp': encoder + decoder,
    'detector', or 'any' of the two: checkpoint_kind tells which). Raises CheckpointError with a one-line reason."""
    path = os.fspath(path)
    if os.path.isdir(path):
        onnx = any(f.endswith(".onnx") for f in os.listdir(path))
        raise CheckpointError(f"{path}: is a folder, not a .pth checkpoint" + (
            " (an ONNX export: the encode, decode, evaluate and detect scripts take it; training needs a .pth)"
            if onnx else ""))
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint not found")
    with open(path, "rb") as f:
        head = f.read(8)
    looks_like = "an ONNX model" if path.endswith(".onnx") else next(
        (name for magic, name in ((b"\xff\xd8\xff", "a JPEG image"), (b"\x89PNG", "a PNG image"),
                                  (b"<", "a text/HTML file")) if head.startswith(magic)), None)
    if looks_like is not None or not head:
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({looks_like or 'an empty file'})"
                              + ("; ONNX models are read by onnx_inference.py" if looks_like == "an ONNX model" else ""))
    if not head.startswith((b"PK\x03\x04", b"\x80")):   # torch.save writes a zip (or a legacy pickle)
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither a torch.save zip nor a pickle)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # zip/pickle errors, truncated files, disallowed globals
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable StegaStamp checkpoint ({first[:200]})") from None
    if kind == "any" and isinstance(ckpt, dict):
        kind = checkpoint_kind(ckpt)
    config_key = {"stegastamp": "model_config", "detector": "detector_config"}[kind]
    if isinstance(ckpt, dict) and config_key not in ckpt:
        other = next((k for k, c in (("a stamp detector", "detector_config"), ("an encoder/decoder", "model_config"))
                      if c in ckpt), None)
        if other:
            wanted = "a stamp detector" if kind == "detector" else "an encoder/decoder"
            raise CheckpointError(f"{path}: holds {other}, not {wanted}")
    if not isinstance(ckpt, dict) or config_key not in ckpt:
        raise CheckpointError(f"{path}: not a StegaStamp checkpoint (no '{config_key}'; a bare state_dict?)")
    version = ckpt.get("format_version")
    if version != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format_version {version!r}, this code reads "
                              f"{CHECKPOINT_FORMAT_VERSION}")
    if kind == "detector":
        if not isinstance(ckpt.get("detector"), dict):
            raise CheckpointError(f"{path}: checkpoint lacks detector weights")
        return ckpt
    missing = [k for k in ("encoder", "decoder") if not isinstance(ckpt.get(k), dict)]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)} weights")
    try:
        ModelConfig.from_dict(ckpt["model_config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: bad model_config: {e}") from None
    return ckpt


def load_state(module: nn.Module, state: dict, what: str, path) -> None:
    """load_state_dict(strict) with a one-line CheckpointError listing the mismatch instead of a page of keys."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = "; ".join(lines[1:3]) if len(lines) > 1 else lines[0]
        raise CheckpointError(f"{path}: {what} weights do not match the architecture ({detail[:300]})") from None


def save_detector(path, cfg: DetectorConfig, detector, opt=None, step: int = 0, train_args: dict = None, **extra):
    """A detector checkpoint: like save_checkpoint, primitives and state_dicts only (weights_only=True)."""
    atomic_torch_save({"format_version": CHECKPOINT_FORMAT_VERSION, "detector_config": asdict(cfg),
                       "detector": unwrap(detector).state_dict(), "opt": opt.state_dict() if opt is not None else None,
                       "step": int(step), "train_args": dict(train_args or {}), **extra}, path)


def load_detector(path, device="cpu"):
    """path -> (DetectorConfig, StampDetector in eval mode), or a one-line CheckpointError."""
    return detector_from_checkpoint(read_checkpoint(path, kind="detector"), path, device)


def detector_from_checkpoint(ckpt: dict, path, device="cpu"):
    """A detector dict of read_checkpoint (read once) -> (DetectorConfig, StampDetector in eval mode on `device`);
    `path` names it in errors."""
    try:
        cfg = DetectorConfig(**ckpt["detector_config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: bad detector_config: {e}") from None
    detector = StampDetector(cfg)
    load_state(detector, ckpt["detector"], "detector", path)
    return cfg, detector.to(device).eval()


def load_checkpoint(path, device="cpu"):
    """path -> (ModelConfig, encoder, decoder) in eval mode on `device`. Never returns an untrained model."""
    return models_from_checkpoint(read_checkpoint(path), path, device)


def models_from_checkpoint(ckpt: dict, path, device="cpu"):
    """A dict of read_checkpoint (read once, e.g. for its optimizer state too) -> (ModelConfig, encoder, decoder) in
    eval mode on `device`; `path` names it in errors."""
    cfg = ModelConfig.from_dict(ckpt["model_config"])
    encoder, decoder = StegaStampEncoder(cfg), StegaStampDecoder(cfg)
    load_state(encoder, ckpt["encoder"], "encoder", path)
    load_state(decoder, ckpt["decoder"], "decoder", path)
    return cfg, encoder.to(device).eval(), decoder.to(device).eval()
