/**
 * llamem: run GGUF models locally through llama.cpp, with memory you can see and bound.
 */
export { loadModel, Model } from "./model.js";
export type { LoadModelOptions, LoadMode, ModelInfo, ChatMessage, ChatTemplateOptions, ChatTool, ChatToolCall, TokenizeOptions } from "./model.js";
export { jsonSchemaToGrammar } from "./grammar/json-schema.js";
export type { JsonSchema } from "./grammar/json-schema.js";
export { Context } from "./context.js";
export { LoraAdapter } from "./adapter.js";
export type { ContextOptions, ContextMemory, ContextInfo, MemoryRow, DraftOptions, DraftStats } from "./context.js";
export { defaultThreads, availableRam } from "./system.js";
export { DEFAULTS, KV_CACHE_TYPE_NAMES } from "./options.js";
export type { KvCacheType, SamplingOptions, PlacementOptions, ContextShapeOptions, PoolingType } from "./options.js";
export type { EmbedOptions } from "./embedding.js";
export { Sequence } from "./sequence.js";
export type { GenerateOptions, GenerationResult, StopReason } from "./generation.js";
export { estimateMemory } from "./memory/estimate.js";
export type { EstimateOptions, MemoryEstimate, DeviceEstimate } from "./memory/estimate.js";
export { fitModel } from "./memory/fit.js";
export type { FitOptions, FitResult } from "./memory/fit.js";
export { formatBytes } from "./memory/format.js";
export { LlamemError, ERROR_CODES } from "./errors.js";
export type { LlamemErrorCode } from "./errors.js";
export { setLogLevel } from "./log.js";
export type { LogLevel } from "./log.js";
export { readGguf } from "./gguf/read.js";
export type { GgufFile, GgufTensorInfo } from "./gguf/format.js";
export { listDevices } from "./devices.js";
export type { Device } from "./devices.js";
export { quantize, QUANT_TYPES } from "./quantize.js";
export type { QuantType, QuantizeOptions } from "./quantize.js";
export { addRpcServers, serveRpc } from "./rpc.js";
export { ChatSession, createSession, loadSession } from "./session/session.js";
export type { SessionOptions, PromptOptions, SessionStats, LoadSessionOptions, TurnEvent, SessionReply } from "./session/session.js";
export type { SessionTool, ToolCallRecord } from "./session/tools.js";
export type { ToolChoice } from "./chat/tool-calls.js";
export { chatCompletion, completeChat } from "./chat/completion.js";
export type { ChatCompletionOptions, ChatCompletion, ChatCompletionEvent, ChatCompletionToolCall, ChatFinishReason } from "./chat/completion.js";
export { MemoryRecallStore, recallEntryBytes } from "./session/recall.js";
export { openArchiveStore, ArchiveStore } from "./session/archive-store.js";
export type { ArchiveStoreOptions } from "./session/archive-store.js";
export type { RecallOptions, RecallEmbedder, RecalledTurn, RecallStore, RecallEntry } from "./session/recall.js";
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
export { createPool, SessionPool } from "./session/pool/pool.js";
export type { PoolOptions, PoolStats } from "./session/pool/pool.js";
export { startServer, LlamemServer } from "./serve/server.js";
export type { ServerOptions } from "./serve/server.js";
