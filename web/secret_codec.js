// The secret codec in JavaScript: the same layout and checks as secret_codec.SecretCodec (Python), bit for bit.
//
//   const codec = new SecretCodec({secret_size: 100, data_bytes: 7, bch_t: 5, bch_prim_poly: 137});
//   const bits = codec.encode("Hello!");        // Uint8Array(100) of 0/1
//   codec.decode(bits)                          // {message: "Hello!", correctedBits: 0, reason: ""}
//
// Layout: [data_bytes * 8 data bits | ecc_bytes * 8 ECC bits | zero pad bits], MSB first per byte; the text is
// UTF-8, space padded. BCH over GF(2^m) with the given primitive polynomial (137 = x^7 + x^3 + 1), systematic:
// the ECC is the remainder of data(x) * x^r modulo the generator g(x) (r = m * t ECC bits, stored MSB first and
// zero padded to whole bytes), which is what bchlib (the Linux kernel's BCH) computes. A message is returned only
// if: the pad bits are zero, at most t errors are located and every located error lies inside the code, the
// corrected packet is within t flips of the received bits, the data is not all zero, and it is valid UTF-8.

class GF {
  constructor(primPoly) {
    this.m = Math.floor(Math.log2(primPoly));
    this.n = (1 << this.m) - 1;
    this.exp = new Int32Array(2 * this.n);
    this.log = new Int32Array(this.n + 1).fill(-1);
    let x = 1;
    for (let i = 0; i < this.n; i++) {
      this.exp[i] = x;
      this.log[x] = i;
      x <<= 1;
      if (x & (1 << this.m)) x ^= primPoly;
    }
    for (let i = this.n; i < 2 * this.n; i++) this.exp[i] = this.exp[i - this.n];
  }
  mul(a, b) { return a && b ? this.exp[this.log[a] + this.log[b]] : 0; }
  div(a, b) { return a ? this.exp[(this.log[a] - this.log[b] + this.n) % this.n] : 0; }
  pow(i) { return this.exp[((i % this.n) + this.n) % this.n]; }   // alpha^i
}

// Polynomials over GF(2) as arrays of 0/1, index = degree.
function polyMulGF2(a, b) {
  const out = new Array(a.length + b.length - 1).fill(0);
  a.forEach((ai, i) => { if (ai) b.forEach((bj, j) => { out[i + j] ^= bj; }); });
  return out;
}

function minimalPolynomial(gf, i) {
  // prod over the cyclotomic coset of i of (x - alpha^j), coefficients in GF(2^m) that end up in GF(2)
  const coset = [];
  let j = i % gf.n;
  do { coset.push(j); j = (2 * j) % gf.n; } while (j !== i % gf.n);
  let poly = [1];                                                   // GF(2^m) coefficients
  for (const c of coset) {
    const root = gf.pow(c);
    const next = new Array(poly.length + 1).fill(0);
    poly.forEach((p, d) => { next[d + 1] ^= p; next[d] ^= gf.mul(p, root); });
    poly = next;
  }
  return { coset, poly: poly.map((v) => (v ? 1 : 0)) };
}

export class BCH {
  constructor(t, primPoly) {
    this.gf = new GF(primPoly);
    this.t = t;
    const seen = new Set();
    let g = [1];
    for (let i = 1; i <= 2 * t; i++) {
      if (seen.has(i % this.gf.n)) continue;
      const { coset, poly } = minimalPolynomial(this.gf, i);
      coset.forEach((c) => seen.add(c));
      g = polyMulGF2(g, poly);
    }
    this.generator = g;                   // degree r = ecc bits
    this.eccBits = g.length - 1;
    this.eccBytes = Math.ceil(this.eccBits / 8);
  }

  // data bits (MSB first) -> ECC bits (MSB first): remainder of data(x) * x^r mod g(x)
  eccOf(dataBits) {
    const r = this.eccBits;
    const reg = new Uint8Array(r);       // reg[0] is the coefficient of x^(r-1)
    for (const bit of dataBits) {
      const feedback = bit ^ reg[0];
      for (let k = 0; k < r - 1; k++) reg[k] = reg[k + 1] ^ (feedback & this.generator[r - 1 - k]);
      reg[r - 1] = feedback & this.generator[0];
    }
    return reg;
  }

  // codeword bits (data then ECC, MSB first) -> {bits (corrected copy), nerr} or {nerr: -1}
  correct(codeBits) {
    const gf = this.gf, t = this.t, len = codeBits.length;
    // bit k (from the start) is the coefficient of x^(len - 1 - k)
    const synd = new Array(2 * t + 1).fill(0);
    for (let j = 1; j <= 2 * t; j++) {
      let s = 0;
      for (let k = 0; k < len; k++) if (codeBits[k]) s ^= gf.pow(j * (len - 1 - k));
      synd[j] = s;
    }
    if (synd.every((s) => s === 0)) return { bits: Uint8Array.from(codeBits), nerr: 0 };
    // Berlekamp-Massey
    let C = [1], B = [1], L = 0, m = 1, b = 1;
    for (let nIdx = 0; nIdx < 2 * t; nIdx++) {
      let d = synd[nIdx + 1];
      for (let i = 1; i <= L; i++) d ^= gf.mul(C[i] || 0, synd[nIdx + 1 - i]);
      if (d === 0) { m++; continue; }
      const coef = gf.div(d, b);
      const T = C.slice();
      const shifted = new Array(m).fill(0).concat(B.map((v) => gf.mul(v, coef)));
      const next = new Array(Math.max(C.length, shifted.length)).fill(0);
      for (let i = 0; i < next.length; i++) next[i] = (C[i] || 0) ^ (shifted[i] || 0);
      C = next;
      if (2 * L <= nIdx) { L = nIdx + 1 - L; B = T; b = d; m = 1; } else { m++; }
    }
    if (L > t) return { nerr: -1 };
    // Chien search over the positions that exist in this (shortened) code
    const out = Uint8Array.from(codeBits);
    let found = 0;
    for (let p = 0; p < len; p++) {         // p = degree of the error position
      let v = 0;
      for (let i = 0; i < C.length; i++) if (C[i]) v ^= gf.mul(C[i], gf.pow(-i * p));
      if (v === 0) { out[len - 1 - p] ^= 1; found++; }
    }
    if (found !== L) return { nerr: -1 };
    return { bits: out, nerr: found };
  }
}

export class SecretCodec {
  constructor({ secret_size = 100, data_bytes = 7, bch_t = 5, bch_prim_poly = 137 } = {}) {
    this.bch = new BCH(bch_t, bch_prim_poly);
    this.secretSize = secret_size;
    this.dataBytes = data_bytes;
    this.t = bch_t;
    this.packetBits = 8 * (data_bytes + this.bch.eccBytes);
    this.codeBits = 8 * data_bytes + this.bch.eccBits;
    if (this.packetBits > this.secretSize) {
      throw new Error(`${data_bytes} data bytes + ${this.bch.eccBytes} ECC bytes = ${this.packetBits} bits do not ` +
                      `fit in secret_size=${secret_size}`);
    }
  }

  encode(text) {
    const data = new TextEncoder().encode(text);
    if (data.length === 0) throw new Error(`the secret is empty: give 1 to ${this.dataBytes} characters`);
    if (data.length > this.dataBytes) {
      throw new Error(`"${text}" is ${data.length} bytes in UTF-8; at most ${this.dataBytes} fit ` +
                      "(one byte per ASCII character, more for others)");
    }
    const padded = new Uint8Array(this.dataBytes).fill(0x20);
    padded.set(data);
    const bits = new Uint8Array(this.secretSize);
    for (let i = 0; i < 8 * this.dataBytes; i++) bits[i] = (padded[i >> 3] >> (7 - (i & 7))) & 1;
    const ecc = this.bch.eccOf(bits.subarray(0, 8 * this.dataBytes));
    bits.set(ecc, 8 * this.dataBytes);   // the rest of the last ECC byte and the pad stay 0
    return bits;
  }

  decode(bitsIn) {
    if (bitsIn.length !== this.secretSize) throw new Error(`expected ${this.secretSize} bits, got ${bitsIn.length}`);
    const hard = Uint8Array.from(bitsIn, (v) => (v > 0.5 ? 1 : 0));
    const fail = (reason) => ({ message: null, correctedBits: null, reason });
    for (let i = this.packetBits; i < this.secretSize; i++) if (hard[i]) return fail("pad bits are not zero");
    const res = this.bch.correct(hard.subarray(0, this.codeBits));
    if (res.nerr < 0) return fail("too many bit errors for BCH");
    const fixed = res.bits;
    // re-encode the corrected data: the packet must be a codeword within t flips of what was received
    const dataBits = fixed.subarray(0, 8 * this.dataBytes);
    const ecc = this.bch.eccOf(dataBits);
    let distance = 0;
    for (let i = 0; i < this.codeBits; i++) {
      const want = i < dataBits.length ? dataBits[i] : ecc[i - dataBits.length];
      distance += want !== hard[i];
    }
    if (distance > this.t) return fail("BCH correction did not yield a codeword within t flips");
    const bytes = new Uint8Array(this.dataBytes);
    for (let i = 0; i < 8 * this.dataBytes; i++) bytes[i >> 3] |= dataBits[i] << (7 - (i & 7));
    if (bytes.every((v) => v === 0)) return fail("all-zero data: a blank image, not a message");
    let text;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    } catch (e) {
      return fail("corrected data is not UTF-8");
    }
    return { message: text.replace(/ +$/, ""), correctedBits: distance, reason: "" };
  }
}
