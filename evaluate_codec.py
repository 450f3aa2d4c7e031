"""Measure the secret codec against random bit flips: recovery, failure and mis-correction rates.

    python evaluate_codec.py                      # 0-10 flips, 5000 trials each, the default 100-bit layout
    python evaluate_codec.py --trials 20000 --flips 6 7
    python evaluate_codec.py --code all --trials 2000 # every named code (secret_codec.CODES), 0 to t+3 flips
"""
import argparse

import numpy as np

from secret_codec import CODES, SecretCodec


def raw_bchlib_decode(codec, bits):
    """What a port that trusts bchlib alone would return (decode + correct + UTF-8, no re-encode check)."""
    hard = (bits > 0.5).astype(np.uint8)
    packet = bytearray(np.packbits(hard[: codec.packet_bits]).tobytes())
    data, ecc = packet[: codec.data_bytes], packet[codec.data_bytes:]
    if codec.bch.decode(data, ecc) < 0:
        return None
    codec.bch.correct(data, ecc)
    try:
        return bytes(data).decode("utf-8").rstrip(" ")
    except UnicodeDecodeError:
        return None


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--trials", type=int, default=5000, help="random messages and flip patterns per flip count")
    p.add_argument("--flips", type=int, nargs="+", default=list(range(11)), help="numbers of flipped bits to test")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--code", default="bch_100", choices=sorted(CODES) + ["all"],
                   help="named message code to measure, or all of them (then flips 0 to t+3 each, unless --flips)")
    return p


def main(args):
    for name in (sorted(CODES) if args.code == "all" else [args.code]):
        codec = SecretCodec(*CODES[name])
        flips = args.flips if args.code != "all" or args.flips != list(range(11)) else range(codec.t + 4)
        print(f"\n{name}: {codec.secret_size} bits, {codec.data_bytes} bytes, corrects {codec.t} bit errors")
        measure(codec, flips, args.trials, np.random.default_rng(args.seed))


def measure(codec, flips, trials, rng):
    alphabet = np.array(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!?"))
    print(f"{'flips':>5} | {'recovered':>9} | {'no message':>10} | {'wrong message':>13} | {'raw bchlib wrong':>16}")
    for n in flips:
        counts = np.zeros(4, dtype=int)
        for _ in range(trials):
            text = "".join(rng.choice(alphabet, codec.data_bytes))
            bits = codec.encode(text)
            idx = rng.choice(codec.code_bits, n, replace=False)   # flips among the bits BCH protects
            bits[idx] = 1 - bits[idx]
            msg = codec.decode(bits).message
            counts[0 if msg == text else 1 if msg is None else 2] += 1
            raw = raw_bchlib_decode(codec, bits)
            counts[3] += raw is not None and raw != text
        r = counts / trials
        print(f"{n:>5} | {r[0]:>9.4f} | {r[1]:>10.4f} | {r[2]:>13.4f} | {r[3]:>16.4f}")


if __name__ == "__main__":
    main(get_parser().parse_args())
