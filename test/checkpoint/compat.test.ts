// The check before a restore of what CRIU needs to match between the dumping host and this one
// (src/checkpoint/compat.ts): real checkpoints, real CRIU, real `criu cpuinfo check`.
//
// The fakes, and why: this host cannot become another CPU, another CRIU or another kernel on
// demand, so a test takes a real checkpoint and makes a COPY of it under a new id in which the
// record of the dumping host says otherwise: cpuinfo.img with xsave features no CPU has (an x86
// xfeatures mask of all ones, re-encoded with the field numbers of CRIU's images/cpuinfo.proto), or
// the manifest's CRIU version or kernel release rewritten; the copy's manifest checksums are
// updated so that only the compatibility check, not the corruption check, can object. The copy is
// then restored for real, so a refusal is shown to change nothing and a forced or warned restore
// to run.

import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import protobuf from 'protobufjs';
import { criuVersionProblem } from '../../src/checkpoint/compat.js';
import type { Manifest } from '../../src/checkpoint/index.js';
import { anyHierarchy, Lab, pidAlive, unavailable, waitUntil } from '../helpers/lab.js';
import { checkpointerIn, counterValue, countingTree, refOf, rejectsWith, waitForCount } from './helpers.js';

const lab = new Lab('compat');
after(() => lab.cleanup());

const X86_ENTRY = new protobuf.Type('CpuinfoX86Entry')
  .add(new protobuf.Field('vendorId', 1, 'int32', 'required'))
  .add(new protobuf.Field('cpuFamily', 2, 'uint32', 'required'))
  .add(new protobuf.Field('model', 3, 'uint32', 'required'))
  .add(new protobuf.Field('stepping', 4, 'uint32', 'required'))
  .add(new protobuf.Field('capabilityVer', 5, 'uint32', 'required'))
  .add(new protobuf.Field('capability', 6, 'uint32', 'repeated'))
  .add(new protobuf.Field('modelId', 7, 'string'))
  .add(new protobuf.Field('xfeaturesMask', 8, 'uint64'))
  .add(new protobuf.Field('xsaveSize', 9, 'uint32'))
  .add(new protobuf.Field('xsaveSizeMax', 10, 'uint32'));
const CPUINFO_ENTRY = new protobuf.Type('CpuinfoEntry').add(new protobuf.Field('x86Entry', 1, 'CpuinfoX86Entry', 'repeated'));
new protobuf.Root().add(X86_ENTRY).add(CPUINFO_ENTRY);

/** cpuinfo.img claiming a CPU with every xsave feature: two magics, a length, one CpuinfoEntry (as CRIU writes it). */
function impossibleCpu(image: Buffer): Buffer {
  const length = image.readUInt32LE(8);
  const entry = CPUINFO_ENTRY.decode(image.subarray(12, 12 + length)) as unknown as { x86Entry: { xfeaturesMask: unknown }[] };
  assert.ok(entry.x86Entry.length > 0, 'an x86 cpuinfo entry');
  for (const cpu of entry.x86Entry) cpu.xfeaturesMask = new protobuf.util.LongBits(0xffffffff, 0xffffffff).toLong(true);
  const body = CPUINFO_ENTRY.encode(entry).finish();
  const header = Buffer.from(image.subarray(0, 12));
  header.writeUInt32LE(body.length, 8);
  return Buffer.concat([header, body]);
}

/**
 * A copy of checkpoint `id` under `${id}-${label}`: `files` rewrites image files (relative path ->
 * new content, or null to remove), `manifest` edits the manifest; checksums follow the files.
 */
function fakeCopy(
  dir: string,
  label: string,
  edit: { files?: Record<string, (old: Buffer) => Buffer | null>; manifest?: (m: Record<string, unknown>) => void },
): string {
  const original = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as Manifest;
  const id = `${original.id}-${label}`;
  const copy = join(dirname(dir), id);
  cpSync(dir, copy, { recursive: true });
  let files = [...original.files];
  for (const [path, rewrite] of Object.entries(edit.files ?? {})) {
    if (!existsSync(join(copy, path))) {
      // cpuinfo-dump.log exists only in the first checkpoint of a process (src/checkpoint/compat.ts)
      files = files.filter((f) => f.path !== path);
      continue;
    }
    const content = rewrite(readFileSync(join(copy, path)));
    if (content === null) {
      rmSync(join(copy, path));
      files = files.filter((f) => f.path !== path);
      continue;
    }
    writeFileSync(join(copy, path), content);
    const sha256 = createHash('sha256').update(content).digest('hex');
    files = files.map((f) => (f.path === path ? { ...f, size: statSync(join(copy, path)).size, sha256 } : f));
  }
  const manifest = { ...original, id, files } as unknown as Record<string, unknown>;
  edit.manifest?.(manifest);
  writeFileSync(join(copy, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
  return id;
}

test('CRIU versions: another major or an older CRIU is a problem, a newer one of the same major is not', () => {
  assert.equal(criuVersionProblem('4.2.1', '4.2.1'), undefined);
  assert.equal(criuVersionProblem('4.1', '4.2.1'), undefined);
  assert.match(criuVersionProblem('4.2.1', '4.1.1')!, /dumped by CRIU 4\.2\.1 and this host has the older CRIU 4\.1\.1/);
  assert.match(criuVersionProblem('3.19', '4.2.1')!, /CRIU 3\.19 .* CRIU 4\.2\.1: another major version/);
  assert.match(criuVersionProblem('5.0', '4.2.1')!, /another major version/);
  assert.equal(criuVersionProblem('unknown', '4.2.1'), undefined, 'unparsable: left to CRIU');
});

const hierarchy = anyHierarchy();
describe(`compatibility before a restore, cgroup ${hierarchy}`, { skip: unavailable(hierarchy) }, () => {
  test('a checkpoint records its CPU (cpuinfo.img, checksummed), and restores on the host that took it without a warning', async () => {
    const { cgroup, dir, pids } = await countingTree(lab, hierarchy, 'same-host');
    const checkpointer = checkpointerIn(lab);
    const summary = await checkpointer.checkpoint(refOf(cgroup), { after: 'killed' });
    const manifest = checkpointer.show(summary.id);
    assert.deepEqual(manifest.host, { cpuinfo: 'cpuinfo.img' });
    assert.ok(manifest.files.some((f) => f.path === 'cpuinfo.img' && f.size > 0));
    const dumped = counterValue(join(dir, 'child-1'));
    const restored = await checkpointer.restore(summary.id);
    assert.deepEqual(restored.warnings, []);
    assert.deepEqual(
      [...restored.pids].sort((a, b) => a - b),
      pids,
    );
    await waitForCount(join(dir, 'child-1'), dumped);
    await lab.killIn(cgroup);
  });

  test('a second checkpoint in the same agent records the same CPU without running criu cpuinfo dump again', async () => {
    const { cgroup } = await countingTree(lab, hierarchy, 'cpuinfo-twice');
    const checkpointer = checkpointerIn(lab);
    const first = await checkpointer.checkpoint(refOf(cgroup), { after: 'thawed' });
    const second = await checkpointer.checkpoint(refOf(cgroup), { after: 'thawed' });
    // The first of this process may have come earlier (another test); a second never runs CRIU for it: no log.
    assert.equal(existsSync(join(second.dir, 'cpuinfo-dump.log')), false, 'no criu cpuinfo dump for the second checkpoint');
    assert.deepEqual(readFileSync(join(second.dir, 'cpuinfo.img')), readFileSync(join(first.dir, 'cpuinfo.img')));
    const entry = checkpointer.show(second.id).files.find((f) => f.path === 'cpuinfo.img');
    assert.equal(
      entry?.sha256,
      createHash('sha256')
        .update(readFileSync(join(second.dir, 'cpuinfo.img')))
        .digest('hex'),
    );
    await lab.killIn(cgroup);
  });

  test('another CPU (a fake cpuinfo.img): refused naming what differs, nothing restored; --force restores with a warning', async () => {
    const { cgroup, dir, pids } = await countingTree(lab, hierarchy, 'other-cpu');
    const checkpointer = checkpointerIn(lab);
    const summary = await checkpointer.checkpoint(refOf(cgroup), { after: 'killed' });
    for (const pid of pids) await waitUntil(`${pid} to be gone`, () => !pidAlive(pid));
    const id = fakeCopy(summary.dir, 'other-cpu', { files: { 'cpuinfo.img': impossibleCpu } });
    const target = `${lab.prefix}/other-cpu-target`;
    await assert.rejects(
      checkpointer.restore(id, { cgroup: target }),
      rejectsWith(
        'ECRIU',
        /does not fit this host: this CPU lacks .*criu cpuinfo check says "cpu: CPU xfeatures has unsupported bits.*--force/,
      ),
    );
    for (const pid of pids) assert.equal(pidAlive(pid), false, `${pid} was not restored`);
    assert.equal(existsSync(join(lab.mount(hierarchy), target)), false, 'the target cgroup was not created');
    const forced = await checkpointer.restore(id, { force: true });
    assert.equal(forced.warnings.length, 1);
    assert.match(forced.warnings[0], /^forced past: this CPU lacks/);
    assert.deepEqual(
      [...forced.pids].sort((a, b) => a - b),
      pids,
    );
    await waitForCount(join(dir, 'child-1'), counterValue(join(dir, 'child-1')));
    await lab.killIn(cgroup);
  });

  test('an image from a newer CRIU (a fake manifest version): refused naming both versions, nothing restored', async () => {
    const { cgroup, pids } = await countingTree(lab, hierarchy, 'newer-criu');
    const checkpointer = checkpointerIn(lab);
    const summary = await checkpointer.checkpoint(refOf(cgroup), { after: 'killed' });
    const ours = checkpointer.show(summary.id).criuVersion;
    // Versions made from this host's own (4.2.1 here, 3.17.1 in the Debian 12 guests): a newer one of
    // the same major, and the next major.
    const hostMajor = Number(ours.split('.')[0]);
    const sameMajor = `${hostMajor}.99`;
    const nextMajor = `${hostMajor + 1}.0`;
    const newer = fakeCopy(summary.dir, 'newer-criu', { manifest: (m) => (m.criuVersion = sameMajor) });
    const major = fakeCopy(summary.dir, 'next-major', { manifest: (m) => (m.criuVersion = nextMajor) });
    const quoted = (v: string) => v.replace(/\./g, '\\.');
    await assert.rejects(
      checkpointer.restore(newer),
      rejectsWith('ECRIU', new RegExp(`dumped by CRIU ${quoted(sameMajor)} and this host has the older CRIU ${quoted(ours)}`)),
    );
    await assert.rejects(
      checkpointer.restore(major),
      rejectsWith('ECRIU', new RegExp(`dumped by CRIU ${quoted(nextMajor)} .*another major version`)),
    );
    for (const pid of pids) assert.equal(pidAlive(pid), false, `${pid} was not restored`);
    assert.deepEqual(lab.pidsOf(cgroup), []);
  });

  test('another kernel (a fake manifest release): restored, with a warning naming both releases', async () => {
    const { cgroup, pids } = await countingTree(lab, hierarchy, 'other-kernel');
    const checkpointer = checkpointerIn(lab);
    const summary = await checkpointer.checkpoint(refOf(cgroup), { after: 'killed' });
    const id = fakeCopy(summary.dir, 'other-kernel', { manifest: (m) => (m.kernel = '5.10.0-fake') });
    const restored = await checkpointer.restore(id);
    assert.equal(restored.warnings.length, 1);
    assert.match(restored.warnings[0], /was taken on Linux 5\.10\.0-fake, this host runs \S+/);
    assert.deepEqual(
      [...restored.pids].sort((a, b) => a - b),
      pids,
    );
    await lab.killIn(cgroup);
  });

  test('an old-format manifest (no host record, no cpuinfo.img) still restores, saying its CPU was not checked', async () => {
    const { cgroup, dir, pids } = await countingTree(lab, hierarchy, 'old-format');
    const checkpointer = checkpointerIn(lab);
    const summary = await checkpointer.checkpoint(refOf(cgroup), { after: 'killed' });
    const id = fakeCopy(summary.dir, 'old-format', {
      files: { 'cpuinfo.img': () => null, 'cpuinfo-dump.log': () => null },
      manifest: (m) => delete m.host,
    });
    const restored = await checkpointer.restore(id);
    assert.deepEqual(restored.warnings, [
      `checkpoint ${id} has no record of its CPU (taken before agentd recorded one): this CPU was not checked against it`,
    ]);
    assert.deepEqual(
      [...restored.pids].sort((a, b) => a - b),
      pids,
    );
    await waitForCount(join(dir, 'child-1'), counterValue(join(dir, 'child-1')));
    await lab.killIn(cgroup);
  });
});
