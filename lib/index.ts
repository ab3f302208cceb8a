/**
 * llamem: run GGUF models locally through llama.cpp, with memory you can see and bound.
 */
export { loadModel, Model } from "./model.js";
export type { LoadModelOptions, LoadMode, ModelInfo, ChatMessage, TokenizeOptions } from "./model.js";
export { Context, defaultThreads } from "./context.js";
export type { ContextOptions, ContextMemory, KvCacheType, MemoryRow } from "./context.js";
export { Sequence } from "./sequence.js";
export type { GenerateOptions, GenerationResult, StopReason } from "./sequence.js";
export { estimateMemory, availableRam } from "./memory/estimate.js";
export type { EstimateOptions, MemoryEstimate, DeviceEstimate } from "./memory/estimate.js";
export { fitModel } from "./memory/fit.js";
export type { FitOptions, FitResult } from "./memory/fit.js";
export { formatBytes } from "./memory/format.js";
export type { SamplingOptions } from "./sampler.js";
export { LlamemError } from "./errors.js";
export type { LlamemErrorCode } from "./errors.js";
export { setLogLevel } from "./native.js";
export type { LogLevel } from "./native.js";
export { readGguf } from "./gguf.js";
export type { GgufFile, GgufTensorInfo } from "./gguf.js";
export { listDevices } from "./devices.js";
export type { Device } from "./devices.js";
export { quantize, QUANT_TYPES } from "./quantize.js";
export type { QuantType, QuantizeOptions } from "./quantize.js";
export { addRpcServers, serveRpc } from "./rpc.js";
export { ChatSession, createSession, loadSession } from "./session/session.js";
export type { SessionOptions, PromptOptions, SessionStats, LoadSessionOptions } from "./session/session.js";
export type {
  SessionMessage,
  SessionMessageInput,
  Turn,
  Summarizer,
  ModelSummaryOptions,
  ArchiveOptions,
  ArchivedTurn,
  MemoryOptions,
  MemoryStrategy,
  MemoryEvent,
  MemoryEventKind,
} from "./session/memory.js";
export { createPool, SessionPool } from "./session/pool.js";
export type { PoolOptions, PoolStats } from "./session/pool.js";
