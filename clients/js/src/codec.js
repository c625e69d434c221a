/**
 * Codecs: how frames travel on the socket. JSON works everywhere; MessagePack (`./msgpack.js`)
 * needs `@msgpack/msgpack`.
 *
 * @typedef {object} Codec
 * @property {string} protocol the WebSocket subprotocol
 * @property {(frame: object) => string | Uint8Array} encode
 * @property {(data: string | ArrayBuffer | Uint8Array) => any} decode
 */

const utf8 = new TextDecoder();

/** @type {Codec} */
export const jsonCodec = {
  protocol: 'xfchat.v1.json',
  encode: (frame) => JSON.stringify(frame),
  decode: (data) => JSON.parse(typeof data === 'string' ? data : utf8.decode(data)),
};

/**
 * A random (version 4) UUID, also where `crypto.randomUUID` is missing (pages served over plain
 * HTTP from a host other than localhost).
 * @returns {string}
 */
export function uuid() {
  if (typeof crypto.randomUUID === 'function') return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
