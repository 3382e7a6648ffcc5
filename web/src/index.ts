export * from "./client/backoff";
export * from "./client/client";
export * from "./client/jobs";
export * from "./client/reducer";
export * from "./client/schemas";
export * from "./react/hooks";
