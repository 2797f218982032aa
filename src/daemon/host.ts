// Host facts for `GET /v1/host` and `agentctl host`: what an operator needs to judge whether this
// machine can checkpoint. Static facts (distribution, CPU) are read once; memory and free space of
// the image directory are read on each request. CRIU is what the Checkpointer found (it keeps a CRIU
// that passes `criu check` and looks again while none does), with the verdict of
// scripts/install-criu.sh's self-test as recorded when it looked.

import { existsSync, realpathSync, statfsSync } from 'node:fs';
import { dirname, sep } from 'node:path';
import si from 'systeminformation';
import { discoverMounts } from '../cgroup/index.js';
import type { CriuInfo } from '../criu/index.js';
import { readMountinfo } from '../proc/index.js';

export type CriuFacts = ({ ok: true } & CriuInfo) | { ok: false; error: { code: string; message: string } };

export interface HostFacts {
  kernel: string;
  distro: { name: string; release: string; codename: string };
  arch: string;
  hostname: string;
  cpu: { manufacturer: string; brand: string; cores: number; physicalCores: number; speedGHz: number };
  memory: { totalBytes: number; availableBytes: number };
  imagesDir: {
    path: string;
    mount?: string;
    filesystem?: string;
    sizeBytes: number;
    freeBytes: number;
    source: 'systeminformation' | 'statfs';
  };
  cgroups: { mode: string; v1Freezer?: string; v2?: string };
  criu: CriuFacts;
  agent: {
    version: string;
    pid: number;
    socket: string;
    runDir: string;
    imagesDir: string;
    /** Every directory a checkpoint request may name as its `imagesDir`: imagesDir first. */
    allowedImagesDirs: string[];
    startedAt: string;
  };
}

type StaticFacts = Pick<HostFacts, 'kernel' | 'distro' | 'arch' | 'hostname' | 'cpu'>;

/** The nearest existing directory of `path` (the images directory may not exist yet). */
function existingAncestor(path: string): string {
  let dir = path;
  while (!existsSync(dir) && dirname(dir) !== dir) dir = dirname(dir);
  return realpathSync(dir);
}

function within(path: string, mount: string): boolean {
  return mount === '/' || path === mount || path.startsWith(mount + sep);
}

/** The deepest mount holding `path`, and its filesystem type, from /proc/self/mountinfo. */
function mountHolding(path: string): { mount: string; type: string } | undefined {
  let best: { mount: string; type: string } | undefined;
  for (const { mountPoint: mount, fsType: type } of readMountinfo()) {
    if (mount && within(path, mount) && (!best || mount.length >= best.mount.length)) best = { mount, type };
  }
  return best;
}

async function imagesDirSpace(path: string): Promise<HostFacts['imagesDir']> {
  const real = existingAncestor(path);
  const holder = mountHolding(real);
  // systeminformation lists disk filesystems only (no tmpfs): use it when it knows the mount, else
  // ask the kernel directly, so a directory on a tmpfs below `/` is not reported with `/`'s space.
  const listed = holder ? (await si.fsSize()).find((fs) => fs.mount === holder.mount) : undefined;
  if (listed) {
    return {
      path,
      mount: listed.mount,
      filesystem: listed.type,
      sizeBytes: listed.size,
      freeBytes: listed.available,
      source: 'systeminformation',
    };
  }
  const st = statfsSync(real);
  return {
    path,
    mount: holder?.mount,
    filesystem: holder?.type,
    sizeBytes: st.blocks * st.bsize,
    freeBytes: st.bavail * st.bsize,
    source: 'statfs',
  };
}

export class HostFactsSource {
  private staticFacts: Promise<StaticFacts> | undefined;

  constructor(
    private readonly agent: HostFacts['agent'],
    private readonly criu: () => Promise<CriuFacts>,
  ) {}

  /** Starts reading the slow static facts (distribution detection takes ~0.4 s) in the background. */
  warm(): void {
    void this.readStatic().catch(() => undefined);
  }

  private readStatic(): Promise<StaticFacts> {
    this.staticFacts ??= Promise.all([si.osInfo(), si.cpu()]).then(([os, cpu]) => ({
      kernel: os.kernel,
      distro: { name: os.distro, release: os.release, codename: os.codename },
      arch: os.arch,
      hostname: os.hostname,
      cpu: { manufacturer: cpu.manufacturer, brand: cpu.brand, cores: cpu.cores, physicalCores: cpu.physicalCores, speedGHz: cpu.speed },
    }));
    return this.staticFacts;
  }

  async facts(): Promise<HostFacts> {
    const [stat, mem, space, criu] = await Promise.all([this.readStatic(), si.mem(), imagesDirSpace(this.agent.imagesDir), this.criu()]);
    const cg = discoverMounts();
    return {
      ...stat,
      memory: { totalBytes: mem.total, availableBytes: mem.available },
      imagesDir: space,
      cgroups: { mode: cg.mode, ...(cg.v1Freezer ? { v1Freezer: cg.v1Freezer } : {}), ...(cg.v2 ? { v2: cg.v2 } : {}) },
      criu,
      agent: this.agent,
    };
  }
}
