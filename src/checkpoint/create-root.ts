// Creating an image root that may come from a request (`imagesDir`): `mkdir -p` one component at a
// time, refusing what is no place for images, with errors that say which component is wrong.
//
// Node's own `mkdirSync(path, { recursive: true })` is not used: where mkdir fails with ENOENT
// although the parent exists (any path under /proc/PID), it retries forever, synchronously, and one
// request then hangs the whole agent at 100% CPU (found by test/faults/bad-input.test.ts).

import { lstatSync, mkdirSync, statfsSync, statSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import { AgentError, systemErrno } from '../errors/index.js';

// Filesystems where a directory is not storage: mkdir in a cgroup makes a cgroup, in procfs and
// sysfs it fails or means something else. statfs(2) f_type values from linux/magic.h.
const NOT_STORAGE: Readonly<Record<number, string>> = {
  0x27e0eb: 'cgroup',
  0x63677270: 'cgroup2',
  0x9fa0: 'proc',
  0x62656572: 'sysfs',
  0x1cd1: 'devpts',
  0x64626720: 'debugfs',
  0x74726163: 'tracefs',
  0x73636673: 'securityfs',
  0xcafe4a11: 'bpf',
};

function refuseNotStorage(dir: string, root: string): void {
  const kind = NOT_STORAGE[Number(statfsSync(dir).type)];
  if (kind)
    throw new AgentError('EINVAL', `image directory ${root} would be on a ${kind} filesystem (${dir}), which is no place for images`);
}

function statOrUndefined(path: string, follow: boolean): Stats | undefined {
  try {
    return follow ? statSync(path) : lstatSync(path);
  } catch (err) {
    if (systemErrno(err) === 'ENOENT') return undefined;
    throw err;
  }
}

/**
 * Makes `root` and its missing parents (0700). Parents may be symlinks (/var/run is one); the root
 * itself may not, and every existing component must be a directory.
 */
export function makeImageRoot(root: string): void {
  const parts = root.split('/').filter((p) => p !== '' && p !== '.');
  let current = '/';
  for (const [i, part] of parts.entries()) {
    const next = join(current, part);
    const last = i === parts.length - 1;
    const st = statOrUndefined(next, !last);
    if (st === undefined) {
      refuseNotStorage(current, root);
      try {
        mkdirSync(next, { mode: 0o700 });
      } catch (err) {
        // EEXIST for a path that stat says is missing: a dangling symlink.
        if (systemErrno(err) === 'EEXIST') throw new AgentError('EINVAL', `image directory ${root}: ${next} is a symlink to nothing`);
        throw err;
      }
    } else if (st.isSymbolicLink()) {
      throw new AgentError('EINVAL', `image directory ${root} is a symlink; refusing to follow it`);
    } else if (!st.isDirectory()) {
      throw new AgentError('EINVAL', `image directory ${root}: ${next} exists and is not a directory`);
    }
    current = next;
  }
  refuseNotStorage(root, root);
  // Anyone who may write to the image root may plant a directory that looks like a checkpoint and
  // have root restore it. A root made here is 0700; an existing one is never chmod-ed (it may be a
  // shared directory such as /tmp that a request named): it is refused instead.
  const st = lstatSync(root);
  const euid = process.geteuid?.() ?? st.uid;
  if (st.uid !== euid)
    throw new AgentError('EACCES', `image directory ${root} is owned by uid ${st.uid}, not by agentd (uid ${euid}); refusing to use it`);
  if ((st.mode & 0o022) !== 0) {
    throw new AgentError(
      'EACCES',
      `image directory ${root} is writable by group or others (mode ${(st.mode & 0o7777).toString(8)}): anyone could plant images there; run chmod go-w ${root}`,
    );
  }
}
