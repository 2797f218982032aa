// Completing what only this host knows: checkpoint ids (asked of the agent) after restore, show and
// delete, and cgroup names (the directories under the freezer mounts the agent reports, and on a
// systemd host the services, scopes and slices systemd knows) after the commands that take a cgroup. Anything else, and any failure to ask, falls back to yargs' own
// completion of commands, options and choices: a completion must never print an error.

import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { call } from './client.js';
import { unitNames } from '../systemd/index.js';

const ID_COMMANDS = new Set(['restore', 'show', 'delete']);
const CGROUP_COMMANDS = new Set(['state', 'freeze', 'thaw', 'kill', 'checkpoint', 'attach']);
// The commands that take any number of cgroups: a further word is one too once it is begun (an
// empty one after the first cgroup is left to yargs, which offers the options).
const MANY_CGROUP_COMMANDS = new Set(['state', 'freeze', 'thaw']);
// The shell waits for the answer while the operator waits for the shell.
const ASK_WAIT_MS = 1500;

// Options that take a value, so that their value is not taken for a command or a positional.
const VALUE_OPTIONS = new Set(['--socket', '--timeout', '--hierarchy', '--after', '--images-dir', '--cgroup']);

async function checkpointIds(socket: string): Promise<string[]> {
  const reply = (await call({ socket, timeoutMs: ASK_WAIT_MS }, 'GET', '/v1/checkpoints')) as {
    checkpoints: { id: string; status: string }[];
  };
  return reply.checkpoints.filter((c) => c.status === 'good').map((c) => c.id);
}

function subdirectories(dir: string): string[] {
  try {
    return readdirSync(dir, { withFileTypes: true })
      .filter((entry) => entry.isDirectory())
      .map((entry) => entry.name);
  } catch {
    return [];
  }
}

/**
 * Cgroup names one level below what is typed: `jobs/b` offers `jobs/build-42` and the rest of
 * `jobs/`, from every freezer mount; an absolute beginning under a mount offers absolute directories.
 */
function cgroupNames(current: string, mounts: readonly string[]): string[] {
  const slash = current.lastIndexOf('/');
  const parent = slash < 0 ? '' : current.slice(0, slash + 1);
  const names = new Set<string>();
  // An absolute beginning above the mounts (`/sys/fs/`): the mounts themselves.
  for (const mount of mounts) if (current.startsWith('/') && mount.startsWith(current) && mount !== current) names.add(`${mount}/`);
  for (const mount of mounts) {
    let base: string | undefined;
    if (current.startsWith('/') && (current + '/').startsWith(mount + '/')) base = parent;
    else if (!current.startsWith('/') || !mounts.some((m) => (current + '/').startsWith(m + '/'))) base = join(mount, parent);
    if (base === undefined) continue;
    for (const name of subdirectories(base)) if (`${parent}${name}`.startsWith(current)) names.add(`${parent}${name}`);
  }
  return [...names].sort();
}

async function freezerMounts(socket: string, hierarchy: string | undefined): Promise<string[]> {
  const host = (await call({ socket, timeoutMs: ASK_WAIT_MS }, 'GET', '/v1/host')) as { cgroups: { v1Freezer?: string; v2?: string } };
  const { v1Freezer, v2 } = host.cgroups;
  const mounts = hierarchy === 'v1' ? [v1Freezer] : hierarchy === 'v2' ? [v2] : [v2, v1Freezer];
  return mounts.filter((m): m is string => typeof m === 'string');
}

/** What the words typed so far (program name first, the word being completed last) are about. */
function completing(words: readonly string[]): {
  command?: string;
  positionals: number;
  socket?: string;
  hierarchy?: string;
  current: string;
  cgroupValue: boolean;
} {
  const current = words.at(-1) ?? '';
  const before = words.slice(1, -1);
  const plain: string[] = [];
  let socket: string | undefined;
  let hierarchy: string | undefined;
  for (let i = 0; i < before.length; i++) {
    const word = before[i];
    if (!word.startsWith('-')) {
      plain.push(word);
      continue;
    }
    const [name, inline] = word.split(/=(.*)/s, 2);
    const value = inline ?? (VALUE_OPTIONS.has(name) ? before[++i] : undefined);
    if (name === '--socket') socket = value;
    if (name === '--hierarchy') hierarchy = value;
  }
  const [command, ...positionals] = plain;
  // `restore <id> --cgroup <TAB>`: the value of --cgroup is a cgroup name too.
  const last = before.at(-1);
  const cgroupValue = last === '--cgroup';
  return { command, positionals: cgroupValue ? 0 : positionals.length, socket, hierarchy, current, cgroupValue };
}

/**
 * Completions of a checkpoint id or a cgroup name for these words, or undefined when the word being
 * completed is neither (or the agent cannot tell): then yargs completes it.
 */
export async function dynamicCompletion(words: readonly string[], defaultSocket: string): Promise<string[] | undefined> {
  const { command, positionals, socket = defaultSocket, hierarchy, current, cgroupValue } = completing(words);
  if (command === undefined || current.startsWith('-')) return undefined;
  if (positionals !== 0 && !(MANY_CGROUP_COMMANDS.has(command) && !cgroupValue && current !== '')) return undefined;
  try {
    if (cgroupValue) return cgroupNames(current, await freezerMounts(socket, hierarchy));
    if (ID_COMMANDS.has(command)) return (await checkpointIds(socket)).filter((id) => id.startsWith(current));
    if (CGROUP_COMMANDS.has(command)) {
      const [cgroups, units] = await Promise.all([
        freezerMounts(socket, hierarchy).then((mounts) => cgroupNames(current, mounts)),
        unitNames(current, { timeoutMs: ASK_WAIT_MS }),
      ]);
      return [...cgroups, ...units];
    }
  } catch {
    // no agent, or it did not answer in time: complete as if it had nothing to offer
  }
  return undefined;
}
