// The archive format, version 1 (docs/archive.md): a brotli-compressed POSIX ustar stream of regular
// files only, in this order:
//   agentd-archive        "agentd-archive 1\n": the format and its version
//   manifest.json         the checkpoint's manifest as it is on disk: id, trees, and every image file with size and sha256
//   signature.json        optional: {"algorithm":"ed25519","publicKey":<hex>,"signature":<hex>} over manifest.json's bytes
//   files/<path>          each image file of the manifest, once, in any order
// The reader checks everything here against a strict schema: an archive is hostile input.

import { AgentError } from '../errors/index.js';
import { AFTER_POLICIES, isChunkBytes, type ImageFile, type Manifest } from '../checkpoint/index.js';

export const VERSION_MEMBER = 'agentd-archive';
export const FORMAT_VERSION = 1;
export const VERSION_TEXT = `agentd-archive ${FORMAT_VERSION}\n`;
export const MANIFEST_MEMBER = 'manifest.json';
export const SIGNATURE_MEMBER = 'signature.json';
export const FILES_PREFIX = 'files/';
export const CONTENT_TYPE = 'application/x-agentd-archive';

/** Largest manifest.json read: thousands of files fit in a few hundred KiB. */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
export const MAX_SIGNATURE_BYTES = 1024;
export const MAX_VERSION_BYTES = 64;
/** A ustar name is 100 bytes (we never split into its prefix field, nor write pax headers). */
const MAX_MEMBER_NAME = 100;
const MAX_FILES = 100_000;
const TAR_BLOCK = 512;

/** Bytes a tar member of `size` bytes takes: its header and its data padded to a block. */
export function memberBytes(size: number): number {
  return TAR_BLOCK + Math.ceil(size / TAR_BLOCK) * TAR_BLOCK;
}

/** The exact length of the (uncompressed) tar stream of an archive: every member, and the two zero blocks that end it. */
export function tarBytes(manifestBytes: number, signatureBytes: number | undefined, files: readonly ImageFile[]): number {
  let total = memberBytes(VERSION_TEXT.length) + memberBytes(manifestBytes) + 2 * TAR_BLOCK;
  if (signatureBytes !== undefined) total += memberBytes(signatureBytes);
  for (const f of files) total += memberBytes(f.size);
  return total;
}

function bad(message: string): AgentError {
  return new AgentError('EINVAL', `archive refused: ${message}`);
}

const SEGMENT = /^[A-Za-z0-9._-]{1,64}$/;

/**
 * Why an image path is not acceptable, or undefined when it is: relative, '/'-separated segments of
 * letters, digits, '.', '_', '-', none of them '.' or '..', short enough for a ustar name.
 */
export function badImagePath(path: string): string | undefined {
  if (path.startsWith('/')) return 'an absolute path';
  const segments = path.split('/');
  if (segments.some((s) => s === '..')) return "a path that climbs out with '..'";
  if (segments.some((s) => s === '.' || s === '')) return "a path with an empty or '.' segment";
  if (!segments.every((s) => SEGMENT.test(s))) return "a path with characters other than letters, digits, '.', '_' and '-'";
  if (path === 'manifest.json') return 'the manifest itself';
  if (Buffer.byteLength(FILES_PREFIX + path) > MAX_MEMBER_NAME) return `a path longer than ${MAX_MEMBER_NAME - FILES_PREFIX.length} bytes`;
  return undefined;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isText = (v: unknown, max = 4096): v is string => typeof v === 'string' && v.length <= max && !v.includes('\0');

function checkFiles(value: unknown): ImageFile[] {
  if (!Array.isArray(value)) throw bad('the manifest has no "files" list');
  if (value.length > MAX_FILES) throw bad(`the manifest lists ${value.length} files, more than ${MAX_FILES}`);
  const seen = new Set<string>();
  const files: ImageFile[] = [];
  for (const [i, f] of value.entries()) {
    if (!isObject(f) || typeof f.path !== 'string') throw bad(`manifest file ${i} has no path`);
    const path = f.path;
    const why = badImagePath(path);
    if (why) throw bad(`manifest file ${JSON.stringify(path.slice(0, 200))} is ${why}`);
    if (seen.has(path)) throw bad(`manifest lists ${path} twice`);
    seen.add(path);
    if (!isCount(f.size)) throw bad(`manifest file ${path} has no valid size`);
    if (typeof f.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(f.sha256)) throw bad(`manifest file ${path} has no valid sha256`);
    if (f.chunkBytes !== undefined && !isChunkBytes(f.chunkBytes)) throw bad(`manifest file ${path} has an invalid chunkBytes`);
    files.push({ path, size: f.size, sha256: f.sha256, ...(f.chunkBytes !== undefined ? { chunkBytes: f.chunkBytes } : {}) });
  }
  // A file cannot also be a directory of another ("tree-0" and "tree-0/core.img").
  for (const path of seen) {
    const parts = path.split('/');
    for (let n = 1; n < parts.length; n++) {
      const parent = parts.slice(0, n).join('/');
      if (seen.has(parent)) throw bad(`manifest lists ${parent} both as a file and as the directory of ${path}`);
    }
  }
  return files;
}

function checkTrees(value: unknown): void {
  if (!Array.isArray(value) || value.length === 0) throw bad('the manifest has no process trees');
  for (const [i, t] of value.entries()) {
    if (!isObject(t) || t.index !== i || !isCount(t.root) || !Array.isArray(t.processes) || t.processes.length === 0) {
      throw bad(`manifest tree ${i} is malformed (index, root, processes)`);
    }
    for (const p of t.processes) {
      if (!isObject(p) || !isCount(p.pid) || p.pid === 0 || !isCount(p.ppid) || !isText(p.command)) {
        throw bad(`manifest tree ${i} has a malformed process (pid, ppid, command)`);
      }
    }
  }
}

const OPTION_FLAGS = ['shellJob', 'tcpEstablished', 'fileLocks'];

/**
 * The manifest of an archive, parsed and checked: everything a restore reads is there with its
 * type, image paths are safe to create under a new directory, sizes and checksums well-formed.
 */
export function parseManifest(bytes: Buffer): Manifest {
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    throw bad(`manifest.json is not JSON: ${(err as Error).message}`);
  }
  if (!isObject(value)) throw bad('manifest.json is not a JSON object');
  if (value.formatVersion !== 1) throw bad(`manifest formatVersion ${JSON.stringify(value.formatVersion)} is not one this agent reads (1)`);
  if (typeof value.id !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/.test(value.id)) throw bad('the manifest has no valid id');
  if (value.hierarchy !== 'v1' && value.hierarchy !== 'v2') throw bad('the manifest has no valid hierarchy (v1 or v2)');
  for (const field of ['cgroup', 'cgroupDir', 'createdAt', 'kernel', 'criuVersion']) {
    if (!isText(value[field]) || value[field] === '') throw bad(`the manifest has no valid "${field}"`);
  }
  if (value.priorState !== 'THAWED' && value.priorState !== 'FROZEN') throw bad('the manifest has no valid priorState');
  const options = value.options;
  if (!isObject(options)) throw bad('the manifest has no "options" object');
  for (const [k, v] of Object.entries(options)) {
    if (k === 'after' && typeof v === 'string' && (AFTER_POLICIES as readonly string[]).includes(v)) continue;
    if (k === 'timeoutMs' && isCount(v)) continue;
    if (!OPTION_FLAGS.includes(k) || typeof v !== 'boolean')
      throw bad(`manifest option ${JSON.stringify(k.slice(0, 50))} is unknown or has the wrong type`);
  }
  checkTrees(value.trees);
  const files = checkFiles(value.files);
  if (!Array.isArray(value.criuStats) || !isObject(value.timings)) throw bad('the manifest has no criuStats or timings');
  return { ...(value as unknown as Manifest), files };
}

/** The signature member, parsed strictly: exactly these three fields, lower-case hex of the right lengths. */
export interface SignatureRecord {
  readonly algorithm: 'ed25519';
  /** Raw 32-byte ed25519 public key, hex. */
  readonly publicKey: string;
  /** 64-byte ed25519 signature over manifest.json's bytes, hex. */
  readonly signature: string;
}

export function parseSignature(bytes: Buffer): SignatureRecord {
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    throw bad(`signature.json is not JSON: ${(err as Error).message}`);
  }
  if (!isObject(value)) throw bad('signature.json is not a JSON object');
  const keys = Object.keys(value).sort().join(',');
  if (keys !== 'algorithm,publicKey,signature')
    throw bad(`signature.json must hold exactly algorithm, publicKey and signature (has ${keys.slice(0, 100)})`);
  if (value.algorithm !== 'ed25519') throw bad(`signature algorithm ${JSON.stringify(value.algorithm)} is not ed25519`);
  if (typeof value.publicKey !== 'string' || !/^[0-9a-f]{64}$/.test(value.publicKey))
    throw bad('signature.json publicKey is not 32 bytes of lower-case hex');
  if (typeof value.signature !== 'string' || !/^[0-9a-f]{128}$/.test(value.signature))
    throw bad('signature.json signature is not 64 bytes of lower-case hex');
  return value as unknown as SignatureRecord;
}
