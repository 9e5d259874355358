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
