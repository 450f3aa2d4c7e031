// Reads codec vectors (JSON on stdin), runs web/secret_codec.js on each, prints the results as JSON.
import { SecretCodec } from "../web/secret_codec.js";
let input = "";
process.stdin.on("data", (c) => { input += c; });
process.stdin.on("end", () => {
  const { configs } = JSON.parse(input);
  const out = configs.map(({ config, cases }) => {
    const codec = new SecretCodec(config);
    return cases.map(({ text, bits }) => {
      let encoded = null, error = null;
      try { encoded = Array.from(codec.encode(text)).join(""); } catch (e) { error = e.message; }
      const res = codec.decode(Array.from(bits, Number));
      return { encoded, error, message: res.message, corrected: res.correctedBits };
    });
  });
  process.stdout.write(JSON.stringify(out));
});
