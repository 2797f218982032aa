// agentd as `npm run setup` installs it on a host where systemd is PID 1 (the test:vm guests): the
// units enabled and running on the default socket, socket activation losing no request, Type=notify
// readiness and Status=, journald records with fields of their own, the socket's group, and systemd
// unit names as agentctl targets. These tests drive the machine's real agentd.service with systemctl,
// so they run only where systemd is PID 1 and setup installed the units; elsewhere they skip, saying
// why. Each leaves agentd.service running as setup left it, and removes the units and users it made.

import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { DEFAULT_SOCKET } from '../../src/defaults/index.js';
import { Lab, REPO_ROOT, anyHierarchy, unavailable, waitUntil } from '../helpers/lab.js';
import { agentPid, agentctl, api, journal, mainPid, run, show, systemctl, systemdSkip, tracerOf } from './system-agent.js';

const lab = new Lab('systemd-service');
const PREFIX = `agentd-test-${process.pid}`;
const madeUnits: string[] = [];
const madeUsers: string[] = [];

const SKIP = systemdSkip();

after(async () => {
  for (const unit of madeUnits) {
    spawnSync('systemctl', ['stop', unit], { stdio: 'ignore' });
    spawnSync('systemctl', ['reset-failed', unit], { stdio: 'ignore' });
  }
  for (const user of madeUsers) spawnSync('userdel', [user], { stdio: 'ignore' });
  if (!SKIP) spawnSync('systemctl', ['start', 'agentd.socket', 'agentd.service'], { stdio: 'ignore' });
  await lab.cleanup();
});

describe('agentd under systemd (npm run setup, systemd as PID 1)', { skip: SKIP }, () => {
  test('setup left agentd.socket and agentd.service enabled and running, on the default socket 0660 root:agentd', async () => {
    for (const unit of ['agentd.socket', 'agentd.service']) {
      assert.equal(systemctl('is-enabled', unit).stdout.trim(), 'enabled', `${unit} is enabled`);
      assert.equal(systemctl('is-active', unit).stdout.trim(), 'active', `${unit} is active`);
    }
    const st = statSync(DEFAULT_SOCKET);
    assert.ok(st.isSocket(), `${DEFAULT_SOCKET} is a socket`);
    assert.equal(st.mode & 0o777, 0o660);
    assert.equal(st.uid, 0);
    assert.equal(run('getent', ['group', 'agentd']).stdout.split(':')[2], String(st.gid), 'its group is agentd');
    const host = await agentctl(['host', '--json']);
    assert.equal(host.code, 0, host.stderr);
    const facts = JSON.parse(host.stdout) as { agent: { pid: number; socket: string } };
    assert.equal(facts.agent.socket, DEFAULT_SOCKET);
    assert.equal(facts.agent.pid, mainPid(), 'the agent answering is agentd.service');
    // Started through bin/agentd-run, which holds its node settings (test/daemon/runtime.test.ts).
    assert.ok(
      readFileSync(`/proc/${facts.agent.pid}/cmdline`, 'utf8').split('\0').includes('--max-semi-space-size=1'),
      'agentd runs with its settings',
    );
  });

  test('socket activation: with the service stopped, the first requests start it and every one is answered', async () => {
    assert.equal(systemctl('stop', 'agentd.service').status, 0);
    assert.equal(systemctl('is-active', 'agentd.service').stdout.trim(), 'inactive');
    assert.equal(systemctl('is-active', 'agentd.socket').stdout.trim(), 'active', 'the socket still listens');
    // Six clients at once while nothing runs: systemd holds their connections in the socket's
    // backlog, starts agentd, and agentd takes the socket as fd 3 and answers all of them.
    const requests = [0, 1, 2, 3, 4].map(() => api('GET', '/v1/host'));
    const cli = agentctl(['--timeout', '120', 'host', '--json']);
    const answers = await Promise.all(requests);
    const fromCli = await cli;
    assert.equal(fromCli.code, 0, fromCli.stderr);
    const pid = mainPid();
    assert.ok(pid > 0, 'agentd.service has a main process again');
    for (const a of answers) {
      assert.equal(a.status, 200);
      assert.equal((a.body.agent as { pid: number }).pid, pid, 'answered by the one agent systemd started');
    }
    assert.equal((JSON.parse(fromCli.stdout) as { agent: { pid: number } }).agent.pid, pid);
    await waitUntil(
      'the agent to log that it took the socket from systemd',
      () => journal([`_PID=${pid}`]).some((r) => /agentd ready/.test(r.MESSAGE) && r.AGENTD_ACTIVATED === 'true'),
      30_000,
    );
  });

  test('Type=notify: systemctl start returns once agentd answers; Status= says idle', async () => {
    assert.equal(systemctl('stop', 'agentd.service').status, 0);
    const start = systemctl('start', 'agentd.service');
    assert.equal(start.status, 0, start.stderr);
    const s = show(
      'agentd.service',
      'Type',
      'ActiveState',
      'SubState',
      'StatusText',
      'MainPID',
      'ExecMainStartTimestampMonotonic',
      'ActiveEnterTimestampMonotonic',
    );
    assert.equal(s.get('Type'), 'notify');
    assert.equal(s.get('ActiveState'), 'active');
    assert.equal(s.get('SubState'), 'running');
    assert.equal(s.get('StatusText'), 'idle');
    // For Type=notify systemd enters "active" when READY=1 arrives, which agentd sends once it
    // listens; under Type=simple the two timestamps would be the fork's.
    assert.ok(
      Number(s.get('ActiveEnterTimestampMonotonic')) > Number(s.get('ExecMainStartTimestampMonotonic')),
      'active only after READY=1',
    );
    assert.equal(await agentPid(), Number(s.get('MainPID')));
    const status = systemctl('status', '--no-pager', '--lines=0', 'agentd.service');
    assert.match(status.stdout, /^\s*Status: "idle"$/m);
  });

  test('Status= names the operation and the cgroup while a checkpoint runs, and idle again after it', async () => {
    const hierarchy = anyHierarchy();
    const cg = lab.cgroup(hierarchy, 'status');
    // 32 MiB: a dump of some seconds under emulation, long enough for several looks at Status=.
    lab.spawnIn(cg, 'perl', [`${REPO_ROOT}/fixtures/workloads/memory-pattern.pl`, '32', `${lab.tempDir('mem')}/result`]);
    await lab.waitForProcesses(cg, 1);
    const seen = new Set<string>();
    let done = false;
    const checkpoint = api('POST', '/v1/checkpoints', { cgroup: cg.path, hierarchy, after: 'prior' }, `${PREFIX}-status`).finally(() => {
      done = true;
    });
    while (!done) {
      seen.add(show('agentd.service', 'StatusText').get('StatusText') ?? '');
      await new Promise((r) => setTimeout(r, 50));
    }
    const answer = await checkpoint;
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
    const expected = `checkpoint of ${hierarchy}:${cg.path} (request ${PREFIX}-status)`;
    assert.ok(seen.has(expected), `Status= showed "${expected}"; seen: ${[...seen].join(' | ')}`);
    assert.equal(show('agentd.service', 'StatusText').get('StatusText'), 'idle');
    const id = (answer.body as { id?: string }).id;
    if (id) await api('DELETE', `/v1/checkpoints/${id}`);
  });

  test('journald: refused requests are warnings with CGROUP=, REQUEST_ID=, AGENTD_ERROR=, PEER_UID=; routine ones are not', async () => {
    const hierarchy = anyHierarchy();
    const parent = lab.cgroup(hierarchy, 'journal');
    const child = lab.cgroup(hierarchy, 'journal/child');
    const since = `@${Math.floor(Date.now() / 1000) - 1}`;
    const ok = `${PREFIX}-routine`;
    const refused = `${PREFIX}-refused`;
    assert.equal((await api('POST', '/v1/cgroups/freeze', { cgroup: parent.path, hierarchy }, ok)).status, 200);
    // Thawing a cgroup its parent holds frozen is refused: EBUSY.
    const busy = await api('POST', '/v1/cgroups/thaw', { cgroup: child.path, hierarchy }, refused);
    assert.equal(busy.status, 409, JSON.stringify(busy.body));
    assert.equal((await api('POST', '/v1/cgroups/thaw', { cgroup: parent.path, hierarchy }, `${ok}-thaw`)).status, 200);

    let records: Record<string, string>[] = [];
    await waitUntil('journald to store the refused request', () => (records = journal([`REQUEST_ID=${refused}`])).length > 0, 30_000);
    const r = records[0];
    assert.equal(r.PRIORITY, '4', 'a warning');
    assert.equal(r.AGENTD_ERROR, 'EBUSY');
    assert.equal(r.PEER_UID, '0');
    assert.equal(r.CGROUP, `${hierarchy}:${child.path}`);
    assert.equal(r.SYSLOG_IDENTIFIER, 'agentd');
    assert.equal(r._SYSTEMD_UNIT, 'agentd.service', 'journald puts it under the unit');
    assert.match(r.MESSAGE, /^thaw /);
    const byCgroup = journal([`CGROUP=${hierarchy}:${child.path}`]);
    assert.deepEqual(
      byCgroup.map((x) => x.REQUEST_ID),
      [refused],
    );
    await waitUntil('journald to store the routine requests', () => journal([`REQUEST_ID=${ok}-thaw`]).length > 0, 30_000);
    const routine = journal([`REQUEST_ID=${ok}`]);
    assert.equal(routine[0]?.PRIORITY, '6', 'a routine change is info');
    assert.equal(routine[0]?.AGENTD_ERROR, undefined);
    const warnings = journal([], ['-p', 'warning', '--since', since]);
    const ids = warnings.map((x) => x.REQUEST_ID);
    assert.ok(ids.includes(refused), '-p warning shows the refused request');
    assert.ok(!ids.includes(ok) && !ids.includes(`${ok}-thaw`), '-p warning shows nothing routine');
  });

  test('group agentd: a member may use agentctl; any other user gets the permission message, exit 6', async () => {
    const member = `agtm${process.pid % 100000}`;
    const other = `agto${process.pid % 100000}`;
    for (const [user, groups] of [
      [member, ['-G', 'agentd']],
      [other, []],
    ] as const) {
      const add = run('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', ...groups, user]);
      assert.equal(add.status, 0, add.stderr);
      madeUsers.push(user);
    }
    const ok = await agentctl(['host'], member);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /cgroup/i);
    const refused = await agentctl(['host'], other);
    assert.equal(refused.code, 6, refused.stderr);
    assert.match(refused.stderr, /^agentctl: EUNREACHABLE: permission denied on \/run\/agentd\/agentd\.sock: .*group agentd/m);
  });
});

describe('unit names as targets (systemd as PID 1)', { skip: SKIP }, () => {
  // systemd puts units in the cgroup2 hierarchy wherever one is mounted (pure v2, hybrid).
  const v2 = !SKIP && unavailable('v2') === false;

  /** A transient service running a sleeper; its name. */
  function transientService(name: string, extra: string[] = []): string {
    const unit = `${name}.service`;
    const r = run('systemd-run', ['--quiet', `--unit=${unit}`, ...extra, 'sleep', '100000']);
    assert.equal(r.status, 0, r.stderr);
    madeUnits.push(unit);
    return unit;
  }

  test('a unit that does not exist, and one with no cgroup, are clear errors (exit 3)', async () => {
    const missing = await agentctl(['state', `${PREFIX}-missing.service`]);
    assert.equal(missing.code, 3, missing.stderr);
    assert.match(missing.stderr, /^agentctl: ENOENT: systemd has no unit agentd-test-\d+-missing\.service/m);
    // emergency.service exists on every systemd host and runs only in emergency mode.
    const idle = await agentctl(['state', 'emergency.service']);
    assert.equal(idle.code, 3, idle.stderr);
    assert.match(idle.stderr, /^agentctl: ENOENT: unit emergency\.service has no cgroup \(ActiveState=inactive\)/m);
  });

  test(
    'state, freeze, thaw and checkpoint of NAME.service act on the cgroup systemd gives it',
    { skip: !v2 && 'systemd makes no freezer cgroup for units on cgroup v1: the v1 test below covers it' },
    async () => {
      // Output to nowhere: a service's stdout and stderr are otherwise a Unix socket to journald, which
      // CRIU refuses to dump ("External socket is used", as the first guest run showed).
      const unit = transientService(`${PREFIX}-build`, ['--property=StandardOutput=null', '--property=StandardError=null']);
      const cgroup = show(unit, 'ControlGroup').get('ControlGroup') ?? '';
      assert.match(cgroup, new RegExp(`/${unit.replace(/\./g, '\\.')}$`));
      for (const [cmd, expected] of [
        ['state', 'THAWED'],
        ['freeze', 'FROZEN'],
        ['state', 'FROZEN'],
        ['thaw', 'THAWED'],
      ]) {
        const r = await agentctl([cmd, unit]);
        assert.equal(r.code, 0, r.stderr);
        // The state word (state adds the subtree's process counts after it).
        assert.equal(r.stdout.trim().split(' ')[0], expected, `agentctl ${cmd} ${unit}`);
      }
      const json = await agentctl(['state', unit, '--json']);
      assert.equal((JSON.parse(json.stdout) as { cgroup: string }).cgroup, cgroup.slice(1));
      const cp = await agentctl(['--timeout', '300', 'checkpoint', unit, '--json']);
      assert.equal(cp.code, 0, cp.stderr);
      const summary = JSON.parse(cp.stdout) as { id: string; cgroup: string; processes: number; finalState: string };
      assert.equal(summary.cgroup, cgroup.slice(1));
      assert.equal(summary.processes, 1);
      assert.equal(summary.finalState, 'THAWED');
      assert.equal(show(unit, 'ActiveState').get('ActiveState'), 'active', 'the service runs on');
      await agentctl(['delete', summary.id]);
    },
  );

  test('NAME.scope and NAME.slice too', { skip: !v2 && 'systemd makes no freezer cgroup for units on cgroup v1' }, async () => {
    const scope = `${PREFIX}-job.scope`;
    const runner = lab.spawn('systemd-run', ['--quiet', '--scope', `--unit=${scope}`, 'sleep', '100000']);
    madeUnits.push(scope);
    await waitUntil(`${scope} to run`, () => show(scope, 'ActiveState').get('ActiveState') === 'active', 60_000);
    const slice = `${PREFIX}.slice`;
    transientService(`${PREFIX}-in-slice`, [`--slice=${slice}`]);
    madeUnits.push(slice);
    for (const unit of [scope, slice]) {
      const frozen = await agentctl(['freeze', unit]);
      assert.equal(frozen.code, 0, frozen.stderr);
      assert.equal(frozen.stdout.trim(), 'FROZEN', unit);
      const thawed = await agentctl(['thaw', unit]);
      assert.equal(thawed.stdout.trim(), 'THAWED', unit);
    }
    runner.kill('SIGTERM');
  });

  test(
    'systemctl freeze and agentctl: agentd reads the kernel, and systemd and agentd agree on the state afterwards',
    { skip: !v2 && 'systemctl freeze needs cgroup v2' },
    async (t) => {
      const unit = transientService(`${PREFIX}-shared`);
      const state = async () => (await agentctl(['state', unit])).stdout.trim().split(' ')[0];
      const freezerState = () => show(unit, 'FreezerState').get('FreezerState');

      assert.equal(systemctl('freeze', unit).status, 0);
      assert.equal(await state(), 'FROZEN', 'a unit systemd froze is FROZEN to agentd');
      const thawed = await agentctl(['thaw', unit]);
      assert.equal(thawed.code, 0, thawed.stderr);
      assert.equal(await state(), 'THAWED');
      // systemd learns of the thaw from cgroup.events (or does not): whichever, it must not contradict the
      // kernel. systemd 252 does not (FreezerState stays frozen): a few seconds' looks are enough to tell.
      await waitUntil(`systemd's FreezerState of ${unit} to follow the kernel`, () => freezerState() === 'running', 5_000).catch(
        () => undefined,
      );
      const afterAgentThaw = freezerState();
      t.diagnostic(`after systemctl freeze + agentctl thaw: FreezerState=${afterAgentThaw}`);

      assert.equal((await agentctl(['freeze', unit])).code, 0);
      await waitUntil(`systemd's FreezerState of ${unit} to follow the kernel`, () => freezerState() === 'frozen', 5_000).catch(
        () => undefined,
      );
      const afterAgentFreeze = freezerState();
      const thaw = systemctl('thaw', unit);
      const kernel = await state();
      t.diagnostic(
        `after agentctl freeze: FreezerState=${afterAgentFreeze}; systemctl thaw exit ${thaw.status} ${thaw.stderr.trim()}; kernel ${kernel}`,
      );
      assert.equal(thaw.status, 0, thaw.stderr);
      if (afterAgentFreeze === 'frozen') assert.equal(kernel, 'THAWED', 'systemd knew the unit frozen, so its thaw thaws it');
      else assert.equal(kernel, 'FROZEN', 'systemd thought the unit running, so its thaw left it frozen');
      if (kernel === 'FROZEN') assert.equal((await agentctl(['thaw', unit])).code, 0);
    },
  );

  test(
    'systemctl thaw while CRIU holds the tasks of a unit systemd froze: no task runs, CRIU freezes it again, the image is good',
    { skip: !v2 && "systemd's freezer (systemctl freeze, thaw) needs cgroup v2" },
    async (t) => {
      // A workload whose dump takes seconds, so that CRIU is caught holding it; CRIU is then stopped
      // (SIGSTOP) while systemd thaws the unit, so the thaw lands inside CRIU's hold on every run.
      // What holds (docs/daemon-and-cli.md, "A thaw by systemd during a checkpoint"): every task is
      // stopped under CRIU's ptrace, so the thaw lets none run, and CRIU puts the freezer back to
      // FROZEN when it ends; a thaw outside CRIU's hold is EINCONSISTENT (test/checkpoint/failures,
      // test/lock/checkpointing: the same write to cgroup.freeze that systemctl thaw makes).
      const unit = `${PREFIX}-thawed.service`;
      const result = `${lab.tempDir('thawed')}/result`;
      const started = run('systemd-run', [
        '--quiet',
        `--unit=${unit}`,
        '-p',
        'StandardOutput=null',
        '-p',
        'StandardError=null',
        'perl',
        `${REPO_ROOT}/fixtures/workloads/memory-pattern.pl`,
        '16',
        result,
      ]);
      assert.equal(started.status, 0, started.stderr);
      madeUnits.push(unit);
      await waitUntil(`${unit} to fill its memory`, () => existsSync(result) && readFileSync(result, 'utf8').trim() === 'ready', 60_000);
      const pid = Number(show(unit, 'MainPID').get('MainPID'));
      const events = `/sys/fs/cgroup${show(unit, 'ControlGroup').get('ControlGroup')}/cgroup.events`;
      const state = async () => (await agentctl(['state', unit])).stdout.trim().split(' ')[0];

      assert.equal(systemctl('freeze', unit).status, 0);
      const checkpoint = agentctl(['--timeout', '300', 'checkpoint', unit, '--json']);
      let done = false;
      void checkpoint.then(() => (done = true));
      let criu = 0;
      // Held: traced by CRIU and in its tracing stop (a v2-frozen task reads S; seized and interrupted, t).
      const held = () => (criu = tracerOf(pid)) !== 0 && /^State:\s+t/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
      await waitUntil('CRIU to hold the workload, or the checkpoint to end', () => held() || done, 120_000);
      assert.ok(criu !== 0, `CRIU held the workload before the checkpoint ended: ${done ? JSON.stringify(await checkpoint) : ''}`);
      process.kill(criu, 'SIGSTOP');
      let stateDuring: string | undefined;
      try {
        assert.equal(systemctl('thaw', unit).status, 0);
        await waitUntil("systemd's thaw to reach the kernel", () => /^frozen 0$/m.test(readFileSync(events, 'utf8')), 30_000);
        stateDuring = /^State:\s+(\S)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? '';
      } finally {
        process.kill(criu, 'SIGCONT');
      }
      assert.equal(stateDuring, 't', 'thawed, the task still does not run: it is stopped under CRIU');
      const r = await checkpoint;
      assert.equal(r.code, 0, r.stderr);
      const summary = JSON.parse(r.stdout) as { id: string; finalState: string };
      assert.equal(summary.finalState, 'FROZEN');
      const listed = await api('GET', '/v1/checkpoints');
      const entries = (listed.body as unknown as { checkpoints: { id: string; status: string }[] }).checkpoints;
      assert.deepEqual(
        entries.filter((c) => c.id === summary.id).map((c) => c.status),
        ['good'],
        'kept as a good image',
      );
      assert.equal(await state(), 'FROZEN', 'CRIU froze it again');
      t.diagnostic(`afterwards: FreezerState=${show(unit, 'FreezerState').get('FreezerState')}`);
      await api('DELETE', `/v1/checkpoints/${summary.id}`);
      assert.equal((await agentctl(['thaw', unit])).code, 0);
      process.kill(pid, 'SIGUSR1');
      await waitUntil('the workload to check its memory', () => readFileSync(result, 'utf8').trim() !== 'ready', 60_000);
      assert.equal(readFileSync(result, 'utf8').trim(), 'ok 16', 'the workload is alive, its memory intact');
    },
  );

  test(
    'on cgroup v1 a unit has no freezer cgroup: the error names the path systemd gave',
    { skip: v2 && 'on cgroup v2 every unit with processes has a cgroup the freezer can act on' },
    async () => {
      const unit = transientService(`${PREFIX}-v1`);
      const r = await agentctl(['state', unit]);
      assert.equal(r.code, 3, r.stderr);
      assert.match(r.stderr, new RegExp(`ENOENT: .*system\\.slice/${unit.replace(/\./g, '\\.')}`));
    },
  );
});
