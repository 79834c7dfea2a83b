/** The `model` a JSON document names (a Responses event's `response`, a request body), if any. */
export function modelOf(json: unknown): string | undefined {
  const model = (json as { model?: unknown } | undefined)?.model;
  return typeof model === 'string' ? model : undefined;
}
