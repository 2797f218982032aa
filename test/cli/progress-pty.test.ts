// The progress line on a real terminal (node-pty): agentctl checkpoint, restore, export and import
// against a real agentd, on an image of about 200 MB (memory-pattern.pl 64) so that there is
// something to count. Each draws bytes done of its expected total on stderr, redrawn in place;
// with --json, and with stdout not a terminal (a pipe), nothing of it. Rate and time left depend on
// timing and are not asserted here (test/cli/progress.test.ts pins them with a fake clock).

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { anyHierarchy, waitUntil, workload } from '../helpers/lab.js';
import { agentctlOnPty, AGENTCTL, withAgent } from '../daemon/agent.js';

const { lab, agent } = withAgent('progress-pty');
after(() => undefined);

const ERASE = '\r\x1b[2K';

/** agentctl on an 120x20 pseudo-terminal; resolves with its exit code and everything it drew. */
const onPty = (args: string[]) => agentctlOnPty(agent.socket, args);

/** The lines drawn in place for one stage (the text after each erase that starts with it). */
function drawn(output: string, stage: string): string[] {
  return output
    .split(ERASE)
    .slice(1)
    .map((s) => s.split(/[\r\n]/)[0])
    .filter((s) => s.startsWith(`${stage}  `));
}

const OF_TOTAL = /\d+(\.\d)? (B|KiB|MiB|GiB) of \d+(\.\d)? (KiB|MiB|GiB) \(\d{1,3}%\)/;

test('checkpoint, restore, export and import draw bytes of their total on a terminal; --json and a pipe draw nothing', async () => {
  const cgroup = lab.cgroup(anyHierarchy(), 'memory');
  const result = join(lab.tempDir('memory'), 'result');
  lab.spawnIn(cgroup, workload('memory-pattern.pl'), ['64', result]);
  await waitUntil('the pattern to be written', () => existsSync(result) && readFileSync(result, 'utf8').trim() === 'ready', 60_000);
  await lab.waitForProcesses(cgroup, 1);
  const target = ['--hierarchy', cgroup.hierarchy];

  const checkpoint = await onPty(['checkpoint', cgroup.path, ...target, '--after', 'killed']);
  assert.equal(checkpoint.code, 0, checkpoint.output);
  const dumps = drawn(checkpoint.output, 'dump');
  assert.ok(dumps.length > 0 && dumps.every((l) => /^dump {2}tree 1\/1 {2}/.test(l)), checkpoint.output);
  assert.match(dumps[0], OF_TOTAL, 'the dump counts against the resident memory preflight read');
  const sums = drawn(checkpoint.output, 'manifest');
  assert.ok(sums.length > 0, checkpoint.output);
  assert.ok(
    sums.every((l) => OF_TOTAL.test(l) && l.endsWith('checksums')),
    sums.join('\n'),
  );
  const id = /\b(\d{8}T\d{6}Z-[0-9a-f]{6})\b/.exec(checkpoint.output.split(ERASE).pop()!)?.[1];
  assert.ok(id, checkpoint.output);

  const file = join(lab.tempDir('archive'), 'job.agentd-archive');
  const exported = await onPty(['export', id, '-o', file]);
  assert.equal(exported.code, 0, exported.output);
  assert.ok(
    drawn(exported.output, 'export').some((l) => OF_TOTAL.test(l)),
    exported.output,
  );

  const imported = await onPty(['import', file, '--trust']);
  assert.equal(imported.code, 0, imported.output);
  assert.ok(
    drawn(imported.output, 'import').some((l) => OF_TOTAL.test(l)),
    imported.output,
  );

  const restore = await onPty(['restore', id]);
  assert.equal(restore.code, 0, restore.output);
  const verify = drawn(restore.output, 'verify');
  assert.ok(verify.length > 0 && verify.every((l) => OF_TOTAL.test(l)), restore.output);

  // --json on the terminal: the summary only.
  const quiet = await onPty(['checkpoint', cgroup.path, ...target, '--json']);
  assert.equal(quiet.code, 0, quiet.output);
  assert.equal(quiet.output.includes('\x1b[2K'), false, quiet.output);

  // stdout a pipe, stderr a file: the CLI is not on a terminal, so nothing is drawn either.
  const piped = await new Promise<{ stdout: string; stderr: string }>((resolve, reject) =>
    execFile(process.execPath, [AGENTCTL, '--socket', agent.socket, 'checkpoint', cgroup.path, ...target], (err, stdout, stderr) =>
      err ? reject(err) : resolve({ stdout, stderr }),
    ),
  );
  assert.equal(piped.stderr, '');
  assert.match(piped.stdout, /^\d{8}T\d{6}Z-[0-9a-f]{6}\n {2}cgroup /);
});
