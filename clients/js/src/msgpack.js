/**
 * The MessagePack codec (`xfchat.v1.msgpack`), for Node or a bundler: it imports
 * `@msgpack/msgpack`, which browsers cannot resolve by name on their own.
 */
import { decode, encode } from '@msgpack/msgpack';

/** @type {import('./codec.js').Codec} */
export const msgpackCodec = {
  protocol: 'xfchat.v1.msgpack',
  encode: (frame) => encode(frame),
  decode: (data) => (typeof data === 'string' ? JSON.parse(data) : decode(data)),
};
