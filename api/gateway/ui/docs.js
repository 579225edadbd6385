// The API's docs: Swagger UI (vendored, ui/vendor/README.md) over this gateway's schema.
// Nothing is fetched from elsewhere: no validator badge, no remote specs.
"use strict";

window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  layout: "BaseLayout",
  presets: [SwaggerUIBundle.presets.apis],
  validatorUrl: null,
  queryConfigEnabled: false,
  persistAuthorization: false,
});
