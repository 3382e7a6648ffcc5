/**
 * One callback per animation frame, with a timer as a floor so that hidden tabs (where browsers pause
 * `requestAnimationFrame`) and non-browser hosts still drain their work.
 */
export type FrameScheduler = (callback: () => void) => () => void;

/** The slowest a hidden page drains its inbox, ms. */
const HIDDEN_FLOOR_MS = 250;

export const animationFrame: FrameScheduler = (callback) => {
  let done = false;
  const run = () => {
    if (done) return;
    done = true;
    cancel();
    callback();
  };
  const raf = typeof requestAnimationFrame === "function" ? requestAnimationFrame(run) : null;
  const timer = setTimeout(run, raf === null ? 16 : HIDDEN_FLOOR_MS);
  function cancel() {
    if (raf !== null && typeof cancelAnimationFrame === "function") cancelAnimationFrame(raf);
    clearTimeout(timer);
  }
  return () => {
    done = true;
    cancel();
  };
};
