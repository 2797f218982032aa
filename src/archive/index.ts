// Checkpoint archives: export a good checkpoint as one signed, compressed stream, and import one
// into another agent's image store, verified, as a new checkpoint. Format: docs/archive.md.

/** The service the daemon holds: signing key, export, import. */
export { Archives, type ArchivesOptions, type PreparedExport } from './archives.js';
/** What an import answers. */
export type { ImportSummary } from './import.js';
/** Who asks for an import, and whether to accept an untrusted archive. */
export type { Caller } from './trust.js';
/** A public key as `GET /v1/key` shows it. */
export type { PublicKeyInfo } from './keys.js';
/** An archive over the import limit (answered 413). */
export { ArchiveTooLarge } from './reader.js';
/** The media type of an archive, and its format version. */
export { CONTENT_TYPE, FORMAT_VERSION } from './format.js';
