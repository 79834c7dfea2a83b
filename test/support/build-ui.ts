import { buildUi } from '../../scripts/build-ui.js';

/** vitest globalSetup: the dashboard bundle a gateway with `dashboard.enabled` serves, fresh from web/. */
export default async function setup(): Promise<void> {
  await buildUi();
}
