// What a cgroup becomes after a checkpoint (--after), and the way back after a failure.

import type { Freezer, FreezerState } from '../cgroup/index.js';
import type { AfterPolicy } from './types.js';

/** Applies the request's policy to a cgroup that is FROZEN; returns its final state. */
export async function applyAfterPolicy(freezer: Freezer, after: AfterPolicy, prior: 'THAWED' | 'FROZEN'): Promise<FreezerState | 'EMPTY'> {
  switch (after) {
    case 'frozen':
      return 'FROZEN';
    case 'thawed':
      await freezer.thaw();
      return 'THAWED';
    case 'killed':
      await freezer.killAll();
      return 'EMPTY';
    case 'prior':
      if (prior === 'THAWED') await freezer.thaw();
      return prior;
  }
}

/**
 * After a failure: the prior state, whatever the failure left. A cgroup that was FROZEN is made
 * FROZEN again (CRIU killed mid-dump may have left it thawed); one that ran is thawed.
 */
export async function returnToPrior(freezer: Freezer, prior: 'THAWED' | 'FROZEN'): Promise<void> {
  try {
    if (prior === 'FROZEN') await freezer.freeze();
    else await freezer.thaw();
  } catch {
    // The cgroup vanished or cannot be changed; the caller's error already says what failed.
  }
}
