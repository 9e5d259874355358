import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// The built UI ships inside the Python package: agentspec_studio/static (no CDN at run time).
export default defineConfig({
  plugins: [react()],
  base: "./",
  build: {
    // scripts/build-studio-ui.sh builds in a cache folder and names the package's folder
    outDir: process.env.STUDIO_OUT_DIR ?? "../agentspec_studio/static",
    emptyOutDir: true,
    chunkSizeWarningLimit: 2000,
  },
});
