// The image roots of an agent: its own `--images-dir` first, then each `--allow-images-dir`. A
// checkpoint request may name one of them (`imagesDir`) and nothing else: agentd runs as root, and
// whoever may use its socket must not be able to have it write process memory into any directory
// of the host. Listing, showing, deleting, restoring and recovery look in every root.

import { realpathSync } from 'node:fs';
import { resolve } from 'node:path';
import { AgentError } from '../errors/index.js';
import { ImageStore } from './image-store.js';

// realpath(3) itself: Node's own realpathSync normalizes `..` away before it looks at any symlink.
function realPath(path: string): string | undefined {
  try {
    return realpathSync.native(path);
  } catch {
    return undefined;
  }
}

export class ImageRoots {
  /** One store per root, the agent's own first; duplicates (once normalized) dropped. */
  readonly stores: readonly ImageStore[];

  constructor(own: string, allowed: readonly string[] = []) {
    const paths = [...new Set([own, ...allowed].map((dir) => resolve(dir)))];
    this.stores = paths.map((dir) => new ImageStore(dir));
  }

  /** The agent's own root (`--images-dir`): where a checkpoint goes unless the request names another. */
  get own(): ImageStore {
    return this.stores[0];
  }

  get paths(): string[] {
    return this.stores.map((s) => s.root);
  }

  /**
   * The root a checkpoint request names, or EACCES before anything is touched. The name must be the
   * root's own once normalized, and, where it exists, the same directory once symlinks are resolved:
   * the kernel resolves `..` after symlinks, so `<root>/link/..` reads as the root but is the parent
   * of whatever the link points to. Only the root's configured path is used afterwards.
   */
  named(dir: string): ImageStore {
    const wanted = resolve(dir);
    const store = this.stores.find((s) => s.root === wanted);
    if (!store) {
      const real = realPath(dir);
      const through = real === undefined ? undefined : this.stores.find((s) => realPath(s.root) === real);
      if (through) {
        throw new AgentError('EACCES', `images directory ${dir} leads to ${through.root} through a symlink; name ${through.root} itself`);
      }
      throw new AgentError(
        'EACCES',
        `images directory ${dir} is not one agentd may write to (allowed: ${this.paths.join(', ')}); start agentd with --allow-images-dir ${wanted} to allow it`,
      );
    }
    const real = realPath(dir);
    if (real !== undefined && real !== realPath(store.root)) {
      throw new AgentError(
        'EACCES',
        `images directory ${dir} is ${real}, not the allowed ${store.root}; name the directory itself, without symlinks before '..'`,
      );
    }
    return store;
  }

  /**
   * The roots to read from, each checked first (ImageStore.ensureRoot): the agent's own (made if
   * missing) and every other one that exists. A root that fails its check fails the request loudly
   * rather than hiding its checkpoints.
   */
  present(): ImageStore[] {
    const found = this.stores.filter((s) => s === this.own || s.exists());
    for (const store of found) store.ensureRoot();
    return found;
  }

  /** The root holding checkpoint `id` (good or failed); ENOENT naming every root looked in. */
  holding(id: string): ImageStore {
    const store = this.present().find((s) => s.has(id));
    if (!store) throw new AgentError('ENOENT', `no checkpoint ${id} in ${this.paths.join(', ')}`);
    return store;
  }
}
