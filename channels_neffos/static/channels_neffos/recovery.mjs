// The channels_neffos client helper as an ES module (the code is recovery.js; see there).
import "./recovery.js";

const api = globalThis.ChannelsNeffos;
export const { connect, Session, parsePosition, RESUME, REPLAYED, CLOSE_DRAINING } = api;
export default api;
