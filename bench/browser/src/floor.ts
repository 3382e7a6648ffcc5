/**
 * The floor, not a competitor: a page that only receives the same stream (a bare WebSocket, no parsing, no React).
 * What the browser spends here is what any page pays to have the messages delivered at all.
 */
import { counters, streamUrl } from "./shared";

const ws = new WebSocket(streamUrl);
ws.onmessage = () => {
  counters.handled += 1;
};
