"""The secret codec: a short UTF-8 text <-> bits with BCH error correction (no torch; bchlib).

    codec = SecretCodec()                      # the original layout: 7 data bytes + BCH(t=5, poly 137) + 4 pad bits
    bits = codec.encode("Hello!")              # float32 (100,) in {0,1}
    result = codec.decode(bits)                # DecodeResult(message='Hello!', corrected_bits=0)
    SecretCodec(*CODES["bch_256"])             # another named code (train_pytorch.py --code)
"""
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np


class SecretError(ValueError):
    """A secret that cannot be hidden (empty, too long for the code, malformed raw bits). One line."""


# Named message codes: name -> (secret_size, data_bytes, bch_t, bch_prim_poly). Chosen once at training time
# (train_pytorch.py --code) and carried in the checkpoint and the ONNX metadata. BCH over GF(2^m) protects at most
# n = 2^m - 1 bits (data + ECC); what is left of secret_size is zero pad bits, a further check on decoding.
CODES = {
    "bch_100": (100, 7, 5, 137),          # the original: 7 bytes, 5 correctable bit errors, GF(2^7)
    "bch_100_robust": (100, 5, 8, 137),   # 5 bytes, 8 errors: for harsh channels (print, phone camera)
    "bch_100_long": (100, 9, 3, 137),     # 9 bytes, 3 errors: clean channels only (2-3% wrong messages beyond t)
    "bch_256": (256, 23, 8, 285),         # 256-bit model: 23 bytes, 8 errors, GF(2^8)
    "bch_256_robust": (256, 20, 12, 285),  # 256-bit model: 20 bytes, 12 errors
}


@dataclass(frozen=True)
class DecodeResult:
    """What a decoded bit vector says. `message` is None when no BCH-verified message was found."""
    message: Optional[str]
    corrected_bits: Optional[int] = None   # bit errors BCH located and fixed (data + ECC), None on failure
    reason: str = ""                       # why decoding failed, empty on success
    confidence: Optional[float] = None     # mean |2p - 1| over the bits (1 = every bit certain), set by a model
    bits: Optional[str] = None             # the raw hard bits read ('0101...'), set by a model

    @property
    def ok(self) -> bool:
        return self.message is not None


class SecretCodec:
    """Packs a short UTF-8 text into `secret_size` bits with BCH error correction (port of encode/decode_image.py).

    Layout (encode_image.py / decode_image.py of the original), computed from the code, not hard-coded:
        [data_bytes * 8 data bits | ecc_bytes * 8 ECC bits | zero pad bits up to secret_size], MSB first per byte.
    With the defaults: 56 + 40 + 4 = 100 bits; BCH over GF(2^7) (prim_poly 137 = x^7+x^3+1) corrects up to t=5 flips
    among the 56 data + 35 ECC bits it uses (the last 5 bits of the ECC bytes are unused).
    """

    def __init__(self, secret_size: int = 100, data_bytes: int = 7, bch_t: int = 5, bch_prim_poly: int = 137):
        import bchlib  # imported here so that importing this module never needs the C extension
        # bchlib >= 1.0 takes (t, prim_poly); the pre-1.0 BCH(137, 5) order raises "invalid parameters".
        self.bch = bchlib.BCH(t=bch_t, prim_poly=bch_prim_poly)
        self.secret_size, self.data_bytes, self.t = secret_size, data_bytes, bch_t
        self.ecc_bytes = self.bch.ecc_bytes
        self.packet_bits = 8 * (data_bytes + self.ecc_bytes)
        # BCH reads only the first ecc_bits of the ECC bytes (35 of 40 by default); the rest of the last ECC byte is
        # ignored on decode, so a flip there is harmless and not counted in corrected_bits.
        self.code_bits = 8 * data_bytes + self.bch.ecc_bits
        if self.packet_bits > secret_size:
            raise ValueError(f"{data_bytes} data bytes + {self.ecc_bytes} ECC bytes = {self.packet_bits} bits "
                             f"do not fit in secret_size={secret_size}")
        # The data and ECC bits must fit in one BCH codeword of n = 2^m - 1 bits.
        if 8 * data_bytes + self.bch.ecc_bits > self.bch.n:
            raise ValueError(f"{data_bytes} data bytes exceed the BCH code length n={self.bch.n}")

    @classmethod
    def from_config(cls, cfg) -> "SecretCodec":
        """Build from a ModelConfig (or any object / dict with the same field names)."""
        get = cfg.get if isinstance(cfg, dict) else lambda k: getattr(cfg, k)
        return cls(get("secret_size"), get("data_bytes"), get("bch_t"), get("bch_prim_poly"))

    def encode(self, text: str) -> np.ndarray:
        """Text (at most `data_bytes` bytes of UTF-8) -> float32 (secret_size,) in {0,1}."""
        data = text.encode("utf-8")
        if not data:
            raise SecretError(f"the secret is empty: give 1 to {self.data_bytes} characters (UTF-8 bytes)")
        if len(data) > self.data_bytes:
            raise SecretError(f"secret {text!r} is {len(data)} bytes in UTF-8; at most {self.data_bytes} fit "
                             f"(one byte per ASCII character, more for others)")
        # Pad with spaces as the original does; decode strips them again.
        data = bytearray(data + b" " * (self.data_bytes - len(data)))
        if not any(data):
            raise SecretError("an all-NUL secret is reserved: it is what a blank image decodes to")
        ecc = self.bch.encode(data)
        packet = np.frombuffer(bytes(data + ecc), dtype=np.uint8)
        bits = np.unpackbits(packet)  # (packet_bits,), MSB first per byte like format(x, '08b')
        out = np.zeros(self.secret_size, dtype=np.float32)
        out[: self.packet_bits] = bits
        return out

    def decode(self, bits: Sequence[float]) -> DecodeResult:
        """Bits (secret_size,) in {0,1} (or probabilities, thresholded at 0.5) -> DecodeResult.

        A message is returned only if BCH located at most t errors, the corrected data re-encodes to a codeword within
        t flips of the received bits, it is valid UTF-8 and not all zero (all-zero bits are what a black or flat image
        gives), and the pad bits are all zero (the check detector.py does).
        Trailing pad spaces are stripped.
        """
        bits = np.asarray(bits, dtype=np.float32).reshape(-1)
        if bits.size != self.secret_size:
            raise ValueError(f"expected {self.secret_size} bits, got {bits.size}")
        hard = (bits > 0.5).astype(np.uint8)
        if hard[self.packet_bits:].any():
            return DecodeResult(None, reason="pad bits are not zero")
        packet = bytearray(np.packbits(hard[: self.packet_bits]).tobytes())
        data, ecc = packet[: self.data_bytes], packet[self.data_bytes:]
        try:
            nerr = self.bch.decode(data, ecc)
        except ValueError as e:  # bchlib raises on some inputs it cannot handle (bchlib issue #40)
            return DecodeResult(None, reason=f"BCH error: {e}")
        if nerr < 0:
            return DecodeResult(None, reason="too many bit errors for BCH")
        # bchlib >= 1.0: decode() only locates the errors; correct() applies them in place.
        self.bch.correct(data, ecc)
        # Verify: the corrected data must re-encode to the corrected ECC, within t flips of what was received. bchlib
        # can report success on inputs beyond t and return a non-codeword (seen in tests with 6-10 flips).
        fixed = np.unpackbits(np.frombuffer(bytes(data + self.bch.encode(data)), dtype=np.uint8))
        distance = int(np.sum(fixed[: self.code_bits] != hard[: self.code_bits]))
        if distance > self.t:
            return DecodeResult(None, reason="BCH correction did not yield a codeword within t flips")
        if not any(data):   # all-zero data (and ECC) is the codeword a black or flat image reads as: not a message
            return DecodeResult(None, reason="all-zero data: a blank image, not a message")
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            return DecodeResult(None, reason="corrected data is not UTF-8")
        return DecodeResult(text.rstrip(" "), corrected_bits=distance)
