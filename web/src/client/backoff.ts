/**
 * When to try the socket again: exponential backoff with jitter, and a circuit breaker that stops a flapping
 * link from storming the server.
 */

export interface BackoffOptions {
  /** The first delay, ms (the brief's `reconnectInterval`). */
  initial: number;
  multiplier: number;
  /** The longest delay, ms. */
  max: number;
  /** 0–1: each delay is drawn from [base × (1 − jitter), base], so a room full of pages does not retry in step. */
  jitter: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { initial: 1000, multiplier: 1.5, max: 30_000, jitter: 0.3 };

/** The delay before reconnect attempt `attempt` (0 = the first after a loss). `random` is in [0, 1). */
export function reconnectDelay(attempt: number, o: BackoffOptions, random: () => number = Math.random): number {
  const base = Math.min(o.max, o.initial * o.multiplier ** Math.max(0, attempt));
  const r = Math.min(Math.max(random(), 0), 1);
  return Math.round(base * (1 - o.jitter * r));
}

/** The delay bounds of attempt `attempt`, for tests and for the page's "next try" text. */
export function reconnectDelayBounds(attempt: number, o: BackoffOptions): [number, number] {
  const base = Math.min(o.max, o.initial * o.multiplier ** Math.max(0, attempt));
  return [Math.round(base * (1 - o.jitter)), Math.round(base)];
}

export interface BreakerOptions {
  /** More than this many reconnects within `window` opens the circuit. */
  threshold: number;
  window: number;
  /** How long it stays open before one trial connection, ms (doubles while trials fail, up to `maxCooldown`). */
  cooldown: number;
  maxCooldown: number;
}

export const DEFAULT_BREAKER: BreakerOptions = { threshold: 5, window: 60_000, cooldown: 30_000, maxCooldown: 300_000 };

export interface BreakerOpen {
  reason: string;
  /** When the next trial connection is made (epoch ms). */
  retryAt: number;
}

/** Counts reconnects in a sliding window; opens above the threshold. */
export class CircuitBreaker {
  private attempts: number[] = [];
  private trips = 0;
  open: BreakerOpen | null = null;

  constructor(private readonly o: BreakerOptions) {}

  /** Records a reconnect at `now`; returns the open state when this one tripped the breaker. */
  recordReconnect(now: number): BreakerOpen | null {
    this.attempts = this.attempts.filter((t) => now - t < this.o.window);
    this.attempts.push(now);
    if (this.attempts.length > this.o.threshold) {
      return this.trip(now, `${this.attempts.length} reconnects in ${Math.round(this.o.window / 1000)} s`);
    }
    return null;
  }

  /** A trial connection failed: open again, for longer. */
  trialFailed(now: number, why: string): BreakerOpen {
    return this.trip(now, why);
  }

  private trip(now: number, reason: string): BreakerOpen {
    const cooldown = Math.min(this.o.maxCooldown, this.o.cooldown * 2 ** this.trips);
    this.trips += 1;
    this.open = { reason, retryAt: now + cooldown };
    return this.open;
  }

  /** A connection held: forget the history. */
  reset(): void {
    this.attempts = [];
    this.trips = 0;
    this.open = null;
  }
}
