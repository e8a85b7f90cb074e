/// <reference types="vitest/config" />
import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";
import tailwindcss from "@tailwindcss/vite";

// `npm run dev` proxies the API to a gateway on :8000; the build is served by the gateway itself at /.
const gateway = process.env.GROUPQWEN_URL ?? "http://127.0.0.1:8000";

export default defineConfig({
  plugins: [react(), tailwindcss()],
  server: { proxy: { "/v1": { target: gateway, ws: true }, "/health": gateway, "/metrics": gateway } },
  build: { target: "es2022", chunkSizeWarningLimit: 400 },
  test: { environment: "node", include: ["src/**/*.test.ts"] },
});
