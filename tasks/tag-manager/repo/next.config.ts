import type { NextConfig } from "next";

const nextConfig: NextConfig = {
  // Plain string hrefs everywhere; no generated route types.
  typedRoutes: false,
};

export default nextConfig;
