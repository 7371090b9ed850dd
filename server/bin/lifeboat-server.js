#!/usr/bin/env node
import "../dist/cli/server-main.js";
