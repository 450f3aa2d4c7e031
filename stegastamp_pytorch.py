"""Python API: hide and read messages with a trained checkpoint, at any image size.

    from stegastamp_pytorch import StegaStamp
    from image_io import load_image
    model = StegaStamp.load("pretrained/stegastamp_128.pth")          # device: cuda if available, else cpu
    encoded, residual = model.encode(load_image("photo.jpg"), "Hello!")  # PIL images, the photo's full size
    result = model.decode(encoded)                                     # DecodeResult(message='Hello!', ...)

The same calls exist on onnx_inference.OnnxStegaStamp (no torch needed); both share inference.StegaStampRunner, and
inference.load_model(path) picks the right one for a path.
"""
from dataclasses import asdict

import numpy as np
import torch

from inference import ModelLoadError, StegaStampRunner, sim_size
from models_pytorch import load_checkpoint
from utils_pytorch import AugmentConfig, margin_loss, random_views, through_cover


def cpu_has_bf16() -> bool:
    """Does oneDNN have native bfloat16 kernels on this CPU (AVX512-BF16, AMX)? Without them bf16 is emulated."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class StegaStamp(StegaStampRunner):
    """A checkpoint's encoder and decoder behind encode(image, secret) / decode(image) (see StegaStampRunner)."""
    can_optimize = True

    def __init__(self, cfg, encoder, decoder, device, bf16=False):
        super().__init__(asdict(cfg))
        self.cfg, self.device = cfg, device
        # bf16: weights stored in bfloat16 and NHWC activations. On CPUs with AMX/avx512_bf16 (and on GPUs) this
        # is ~2x faster than fp32 (README, Measured); casting once here avoids autocast re-casting the 164 MB STN
        # weights on every call. Outputs stay float32.
        self.dtype = torch.bfloat16 if bf16 else torch.float32
        self.memory_format = torch.channels_last if bf16 else torch.contiguous_format
        self.encoder = encoder.to(self.dtype, memory_format=self.memory_format).requires_grad_(False)
        self.decoder = decoder.to(self.dtype, memory_format=self.memory_format).requires_grad_(False)

    @classmethod
    def load(cls, path, device=None, bf16=False) -> "StegaStamp":
        """Checkpoint path -> ready model in eval mode. Raises models_pytorch.CheckpointError with one line."""
        try:
            device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        except RuntimeError:
            raise ModelLoadError(f"--device {device}: not a device name (cpu, cuda, cuda:1, ...)") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ModelLoadError(f"--device {device}: no CUDA GPU is available on this machine (use --device cpu)")
        cfg, encoder, decoder = load_checkpoint(path, device)
        if bf16 and device.type == "cpu" and not cpu_has_bf16():
            import warnings
            warnings.warn("--bf16 ignored: this CPU has no native bfloat16 (AVX512-BF16 or AMX), so bf16 would be "
                          "emulated; using fp32", stacklevel=2)
            bf16 = False
        return cls(cfg, encoder, decoder, device, bf16)

    def _tensor(self, arr):
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).to(self.device, self.dtype)
        return t.contiguous(memory_format=self.memory_format) if t.dim() == 4 else t

    @torch.inference_mode()
    def run_encoder(self, secrets, images):
        """secrets (B, L) in {0,1}, images (B, 3, h, w) in [0,1] (numpy) -> residuals (B, 3, h, w) numpy."""
        return self.encoder(self._tensor(secrets), self._tensor(images)).float().cpu().numpy()

    @torch.inference_mode()
    def run_decoder(self, images):
        """images (B, 3, h, w) in [0,1] (numpy) -> logits (B, L) numpy."""
        return self.decoder(self._tensor(images)).float().cpu().numpy()

    def optimize_residual(self, cover, x, r, bits, steps, seed=0):
        """--optimize (see inference.OPT_*): refine one image's residual r (h, w, 3) for `steps` Adam steps against
        this model's own decoder, reading random camera-like views of the encoded image. x: the cover at the model
        size (h, w, 3); cover: the PIL cover, whose size sets the resampling the decode path applies to the
        residual (upsampled onto the cover, read back resized to the model size). -> the new residual (h, w, 3)."""
        from inference import OPT_ENERGY, OPT_LR, OPT_MARGIN, OPT_PERSP, OPT_VIEWS
        h, w = self.size
        W, H = sim_size(cover).size
        xt = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)[None], np.float32)).to(self.device)
        bits = torch.from_numpy(np.asarray(bits, np.float32)).to(self.device)[None]                # (1, L)
        res = torch.from_numpy(np.ascontiguousarray(r.transpose(2, 0, 1)[None], np.float32)).to(self.device)
        res.requires_grad_(True)
        energy0 = float((res.detach() ** 2).mean()) + 1e-12
        opt = torch.optim.Adam([res], lr=OPT_LR)
        gen = torch.Generator(self.device).manual_seed(seed)
        cpu_gen = gen if self.device.type == "cpu" else torch.Generator().manual_seed(seed)
        aug = AugmentConfig(jpeg_quality=50)
        with torch.enable_grad():
            for _ in range(steps):
                encoded = (xt + through_cover(res, (H, W))).clamp(0, 1)                   # as the decoder gets it
                views = random_views(encoded, OPT_VIEWS, OPT_PERSP, aug, gen, cpu_gen)
                logits = self.decoder(views.to(self.dtype).contiguous(memory_format=self.memory_format)).float()
                loss = (margin_loss(logits, bits, OPT_MARGIN)                             # every bit, every view
                        + OPT_ENERGY * (res ** 2).mean() / energy0)                       # PSNR: the residual's energy
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        return res.detach()[0].permute(1, 2, 0).cpu().numpy()
