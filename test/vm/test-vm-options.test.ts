// `npm run test:vm`'s options (scripts/vm/vagrant.sh, docs/vm.md): what it refuses, it refuses
// before it installs, builds or boots anything, so these runs are quick and change nothing. The
// whole path, machines included, runs in CI's test:vm step.

import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

const SCRIPT = fileURLToPath(new URL('../../../scripts/vm/vagrant.sh', import.meta.url));

function testVm(...args: string[]): { code: number | null; output: string } {
  const run = spawnSync('bash', [SCRIPT, ...args], { encoding: 'utf8', timeout: 30_000 });
  return { code: run.status, output: run.stdout + run.stderr };
}

describe('npm run test:vm: options', () => {
  test('--help says what it runs and names every option', () => {
    const run = testVm('--help');
    assert.equal(run.code, 0, run.output);
    for (const word of ['--only', '--tools', '--prepare', 'vagrant up', 'AGENTD_VM_TIMEOUT', 'v2b']) {
      assert.ok(run.output.includes(word), `--help does not mention ${word}:\n${run.output}`);
    }
  });

  test('v2b without v2 is refused: v2b restores what v2 exports', () => {
    const run = testVm('--only', 'v2b');
    assert.equal(run.code, 1, run.output);
    assert.match(run.output, /test:vm: FAILED: v2b restores what v2 exports: add --only v2/);
  });

  test('an unknown machine or option is refused, naming it', () => {
    const machine = testVm('--only', 'v3');
    assert.equal(machine.code, 1, machine.output);
    assert.match(machine.output, /unknown machine v3 \(v2, v1 or v2b\)/);
    const option = testVm('--parallel');
    assert.equal(option.code, 1, option.output);
    assert.match(option.output, /unknown option --parallel/);
    const bare = testVm('--only');
    assert.notEqual(bare.code, 0);
    assert.match(bare.output, /--only needs v2, v1 or v2b/);
  });
});
