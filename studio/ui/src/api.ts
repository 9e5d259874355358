// The Studio's backend API (studio/agentspec_studio/app.py). Errors carry the server's
// message and each field's cause, shown next to what the user did.
export type Json = Record<string, any>;

export class ApiError extends Error {
  status: number;
  body: Json;
  constructor(status: number, body: Json) {
    super(body.message ?? `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

export async function call<T = Json>(method: string, path: string, body?: Json): Promise<T> {
  let response: Response;
  try {
    response = await fetch(path, {
      method,
      headers: body ? { "content-type": "application/json" } : {},
      body: body ? JSON.stringify(body) : undefined,
    });
  } catch (e) {
    throw new ApiError(0, { message: `the Studio's server cannot be reached: ${e}` });
  }
  const data = await response.json().catch(() => ({ message: response.statusText }));
  if (!response.ok) throw new ApiError(response.status, data);
  return data as T;
}

export const nsPath = (ns: string) => `/api/namespaces/${encodeURIComponent(ns)}`;

/** POST and read the answer as server-sent events (`data: {json}` each), as they come. */
export async function stream(path: string, body: Json, onEvent: (event: Json) => void, signal?: AbortSignal): Promise<void> {
  let response: Response;
  try {
    response = await fetch(path, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
      signal,
    });
  } catch (e) {
    throw new ApiError(0, { message: `the Studio's server cannot be reached: ${e}` });
  }
  if (!response.ok || !response.body) {
    const data = await response.json().catch(() => ({ message: response.statusText }));
    throw new ApiError(response.status, data);
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end: number;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of block.split("\n")) {
        if (line.startsWith("data:")) onEvent(JSON.parse(line.slice(5)));
      }
    }
  }
}
