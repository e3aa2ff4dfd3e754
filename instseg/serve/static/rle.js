// Masks and files in the browser: COCO compressed RLE -> pixel indices, and a 16-bit
// grayscale PNG writer for label images. No dependencies (the page works offline).
"use strict";

// COCO compressed RLE counts string -> run lengths (zeros first, column-major order).
// Each value is written in 5-bit groups (ASCII offset 48, bit 0x20: more groups follow,
// bit 0x10 of the last group: negative); from the third value on, values are deltas
// from the value two places back.
function rleRuns(counts) {
  const runs = [];
  let p = 0;
  while (p < counts.length) {
    let value = 0, shift = 0, more = true, group = 0;
    while (more) {
      group = counts.charCodeAt(p++) - 48;
      value |= (group & 0x1f) << shift;
      more = (group & 0x20) !== 0;
      shift += 5;
    }
    if (group & 0x10) value |= -1 << shift;
    if (runs.length > 2) value += runs[runs.length - 2];
    runs.push(value);
  }
  return runs;
}

// RLE {size: [h, w], counts} -> Uint32Array of row-major pixel indices (y * w + x).
function rlePixels(rle) {
  const [h, w] = rle.size;
  const runs = rleRuns(rle.counts);
  let n = 0;
  for (let i = 1; i < runs.length; i += 2) n += runs[i];
  const out = new Uint32Array(n);
  let pos = 0, k = 0;
  for (let i = 0; i < runs.length; i++) {
    if (i % 2 === 1) {
      for (let j = pos; j < pos + runs[i]; j++) out[k++] = (j % h) * w + Math.floor(j / h);
    }
    pos += runs[i];
  }
  return out;
}

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(bytes) {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function pngChunk(type, data) {
  const out = new Uint8Array(12 + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
  out.set(data, 8);
  view.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}

// Uint16Array (h * w, row-major) -> Blob of a 16-bit grayscale PNG (zlib via the
// browser's CompressionStream).
async function png16(values, w, h) {
  const raw = new Uint8Array(h * (1 + 2 * w));
  for (let y = 0; y < h; y++) {
    const row = y * (1 + 2 * w);  // filter byte 0, then big-endian samples
    for (let x = 0; x < w; x++) {
      const v = values[y * w + x];
      raw[row + 1 + 2 * x] = v >> 8;
      raw[row + 2 + 2 * x] = v & 0xff;
    }
  }
  const zipped = new Uint8Array(await new Response(
    new Blob([raw]).stream().pipeThrough(new CompressionStream("deflate"))).arrayBuffer());
  const ihdr = new Uint8Array(13);
  const view = new DataView(ihdr.buffer);
  view.setUint32(0, w);
  view.setUint32(4, h);
  ihdr.set([16, 0, 0, 0, 0], 8);  // bit depth 16, grayscale, deflate, no filter, no interlace
  const signature = new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10]);
  return new Blob([signature, pngChunk("IHDR", ihdr), pngChunk("IDAT", zipped),
    pngChunk("IEND", new Uint8Array(0))], {type: "image/png"});
}
