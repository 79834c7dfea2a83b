/** What the gateway reads from a parsed request body; the raw bytes are what travel on. */

export function modelOf(json: unknown): string | undefined {
  const model = (json as { model?: unknown } | undefined)?.model;
  return typeof model === 'string' ? model : undefined;
}

export function isJsonObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
