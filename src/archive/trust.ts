// Who may bring an archive in. An archive whose signature verifies with a key of the trusted-keys
// directory is accepted. One that is unsigned, or signed by a key the directory lacks, is refused
// unless the caller is root and asked for it (`--trust`): root could restore anything it likes
// anyway, whereas a member of group agentd may use the socket but must never get an image of its
// own making restored by root. A signature that does not verify is refused always: the archive was
// changed after it was signed.

import { verify } from 'node:crypto';
import { AgentError } from '../errors/index.js';
import { publicKeyFromRaw, readTrustedKeys } from './keys.js';
import type { ArchiveHead } from './reader.js';
import type { ImportRecord } from '../checkpoint/index.js';
import { createHash } from 'node:crypto';

export interface Caller {
  /** The peer's uid (SO_PEERCRED); undefined when the agent could not learn it. */
  readonly uid?: number;
  /** The request asked to accept an unsigned or unknown-key archive. */
  readonly trust: boolean;
}

/** The signer of an archive as the imported manifest records it. */
export type TrustVerdict = Pick<ImportRecord, 'signer' | 'trustedBy'>;

/** Refused before anything is read: --trust is root's alone. */
export function checkCaller(caller: Caller): void {
  if (caller.trust && caller.uid !== 0) {
    throw new AgentError(
      'EACCES',
      `only root may import an untrusted archive (--trust); this caller is uid ${caller.uid ?? 'unknown'}: add the signer's key to the trusted-keys directory instead`,
    );
  }
}

export function judgeSigner(head: ArchiveHead, trustedKeysDir: string, caller: Caller): TrustVerdict {
  const sig = head.signature;
  let fingerprint: string | undefined;
  if (sig) {
    const raw = Buffer.from(sig.publicKey, 'hex');
    fingerprint = `sha256:${createHash('sha256').update(raw).digest('hex')}`;
    let ok: boolean;
    try {
      ok = verify(null, head.manifestBytes, publicKeyFromRaw(raw), Buffer.from(sig.signature, 'hex'));
    } catch {
      ok = false;
    }
    if (!ok)
      throw new AgentError(
        'EINVAL',
        `archive refused: signature.json does not verify over manifest.json with the key it names (${fingerprint}): the archive was altered`,
      );
    const { keys, skipped } = readTrustedKeys(trustedKeysDir);
    const found = keys.find((k) => k.key.raw === sig.publicKey);
    if (found) return { signer: fingerprint, trustedBy: found.file };
    if (caller.trust && caller.uid === 0) return { signer: fingerprint };
    const note = skipped.length ? `; skipped there: ${skipped.map((s) => `${s.file} (${s.reason})`).join(', ')}` : '';
    throw new AgentError(
      'EACCES',
      `archive refused: it is signed by ${fingerprint}, a key not in ${trustedKeysDir}${note}; put the exporting agent's key there (agentctl key on it)${caller.uid === 0 ? ', or pass --trust' : ''}`,
    );
  }
  if (caller.trust && caller.uid === 0) return {};
  throw new AgentError(
    'EACCES',
    `archive refused: it is unsigned${caller.uid === 0 ? '; as root, pass --trust to import it anyway' : ', and only root may import an unsigned archive (--trust)'}`,
  );
}
