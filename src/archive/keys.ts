// The agent's own ed25519 signing key, and the public keys it trusts. The private key is a PKCS#8
// PEM file ("PRIVATE KEY", as `openssl genpkey -algorithm ed25519` writes it), mode 0600, made on
// first start when missing. Public keys travel as SPKI PEM ("PUBLIC KEY", as `openssl pkey -pubout`
// prints it): `agentctl key` prints one, and a trusted-keys directory holds one per file. Inside an
// archive the signer is named by its raw 32-byte key in hex (docs/archive.md).

import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import {
  closeSync,
  fsyncSync,
  linkSync,
  lstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  readdirSync,
  unlinkSync,
  writeSync,
  constants,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { AgentError, fromSystemError, systemErrno } from '../errors/index.js';

/** A public key as the API and the archive name it. */
export interface PublicKeyInfo {
  readonly algorithm: 'ed25519';
  /** SPKI PEM, what a trusted-keys file holds. */
  readonly pem: string;
  /** The raw 32-byte key in lower-case hex: how signature.json names its signer. */
  readonly raw: string;
  /** `sha256:` and the hex sha256 of the raw key: short enough for logs and messages. */
  readonly fingerprint: string;
}

export interface SigningKey {
  readonly privateKey: KeyObject;
  readonly publicKey: PublicKeyInfo;
}

/** The raw key of an ed25519 public KeyObject, from its JWK form (`x`, base64url). */
function rawOf(key: KeyObject): Buffer {
  const jwk = key.export({ format: 'jwk' });
  if (jwk.kty !== 'OKP' || jwk.crv !== 'Ed25519' || typeof jwk.x !== 'string') throw new Error('not an ed25519 key');
  return Buffer.from(jwk.x, 'base64url');
}

/** What the API, the archive and messages say about a public key. */
export function describePublicKey(key: KeyObject): PublicKeyInfo {
  const raw = rawOf(key);
  return {
    algorithm: 'ed25519',
    pem: key.export({ format: 'pem', type: 'spki' }).toString(),
    raw: raw.toString('hex'),
    fingerprint: `sha256:${createHash('sha256').update(raw).digest('hex')}`,
  };
}

/** The KeyObject of a raw 32-byte ed25519 key. */
export function publicKeyFromRaw(raw: Buffer): KeyObject {
  return createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: raw.toString('base64url') }, format: 'jwk' });
}

/** Makes a new key file without ever replacing one: written beside it, then linked into place (EEXIST if another won). */
function createKeyFile(path: string): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const { privateKey } = generateKeyPairSync('ed25519');
  const pem = privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
  const temporary = `${path}.new-${randomBytes(4).toString('hex')}`;
  const fd = openSync(temporary, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  try {
    writeSync(fd, pem);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    linkSync(temporary, path);
  } catch (err) {
    if (systemErrno(err) !== 'EEXIST') throw err;
  } finally {
    unlinkSync(temporary);
  }
}

/**
 * The agent's signing key at `path`, made (0600, its directory 0700 if missing) when there is none.
 * A key file that is a symlink, not a regular file, or readable or writable by group or others is
 * refused (EACCES): whoever can read it can sign archives every agent trusting this one accepts.
 */
export function loadOrCreateSigningKey(path: string): SigningKey {
  try {
    try {
      lstatSync(path);
    } catch (err) {
      if (systemErrno(err) !== 'ENOENT') throw err;
      createKeyFile(path);
    }
    const st = lstatSync(path);
    if (!st.isFile()) throw new AgentError('EACCES', `signing key ${path} is not a regular file (a symlink is refused)`);
    if ((st.mode & 0o077) !== 0) {
      throw new AgentError(
        'EACCES',
        `signing key ${path} has mode ${(st.mode & 0o777).toString(8)}: group and others must have no access (chmod 600 ${path})`,
      );
    }
    const privateKey = createPrivateKey(readFileSync(path));
    if (privateKey.asymmetricKeyType !== 'ed25519') {
      throw new AgentError('EINVAL', `signing key ${path} is a ${privateKey.asymmetricKeyType} key, not ed25519`);
    }
    return { privateKey, publicKey: describePublicKey(createPublicKey(privateKey)) };
  } catch (err) {
    if (err instanceof AgentError) throw err;
    if (systemErrno(err)) throw fromSystemError(err, `cannot load or create the signing key ${path}`);
    throw new AgentError('EINVAL', `signing key ${path} is not a PEM private key: ${(err as Error).message}`, { cause: err });
  }
}

/** One trusted public key, and the file it came from. */
export interface TrustedKey {
  readonly file: string;
  readonly key: PublicKeyInfo;
}

/** The keys of a trusted-keys directory, and the files skipped with the reason. */
export interface TrustedKeys {
  readonly keys: readonly TrustedKey[];
  readonly skipped: readonly { file: string; reason: string }[];
}

/**
 * Reads the trusted-keys directory, one SPKI PEM ed25519 public key per file (names starting with
 * '.' are ignored). Read at every import, so a key added or removed counts at once. A missing
 * directory trusts nobody. A file (or the directory) that group or others may write is skipped, as
 * is anything not a regular file: whoever could write there could make the agent trust any archive.
 */
export function readTrustedKeys(dir: string): TrustedKeys {
  const keys: TrustedKey[] = [];
  const skipped: { file: string; reason: string }[] = [];
  let names: string[];
  try {
    const st = lstatSync(dir);
    if (!st.isDirectory()) return { keys, skipped: [{ file: dir, reason: 'not a directory' }] };
    if ((st.mode & 0o022) !== 0) return { keys, skipped: [{ file: dir, reason: 'writable by group or others' }] };
    names = readdirSync(dir).sort();
  } catch (err) {
    if (systemErrno(err) === 'ENOENT') return { keys, skipped };
    return { keys, skipped: [{ file: dir, reason: systemErrno(err) ?? String(err) }] };
  }
  for (const name of names) {
    if (name.startsWith('.')) continue;
    const file = join(dir, name);
    try {
      const st = lstatSync(file);
      if (!st.isFile()) throw new Error('not a regular file');
      if ((st.mode & 0o022) !== 0) throw new Error('writable by group or others');
      if (st.size > 64 * 1024) throw new Error('larger than 64 KiB');
      const key = createPublicKey(readFileSync(file));
      if (key.asymmetricKeyType !== 'ed25519') throw new Error(`a ${key.asymmetricKeyType} key, not ed25519`);
      keys.push({ file, key: describePublicKey(key) });
    } catch (err) {
      skipped.push({ file, reason: systemErrno(err) ?? (err as Error).message });
    }
  }
  return { keys, skipped };
}
