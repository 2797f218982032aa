// Terminals agentd holds for restored shell jobs, and the attach protocol spoken over them.

export {
  TerminalSession,
  TerminalSessions,
  type HeldTerminal,
  type TerminalClient,
  type TerminalEnd,
  type TerminalStatus,
} from './sessions.js';
export {
  DETACH,
  EVENT,
  eventFrame,
  frame,
  FrameReader,
  INPUT,
  MAX_FRAME_BYTES,
  OUTPUT,
  parseSize,
  PROTOCOL,
  RESIZE,
  resizeFrame,
  type Size,
  type TerminalEvent,
} from './frames.js';
