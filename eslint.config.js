// Type-aware lint of the TypeScript in src/, test/ and bench/: typescript-eslint's
// recommended-type-checked rules with the type information of tsconfig.check.json.
// Run: npm run lint. Rules are turned off only where they fight the code style, each with why.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', 'build/', 'node_modules/', 'otel-collector/', '**/*.js', '**/*.mjs', '**/*.cjs'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    files: ['**/*.ts'],
    languageOptions: {
      parserOptions: {
        project: './tsconfig.check.json',
        tsconfigRootDir: import.meta.dirname,
      },
    },
    rules: {
      // Messages and log fields show values of unknown type (errors thrown by libraries, parsed
      // JSON) with String(x); "[object Object]" there is a readable enough worst case.
      '@typescript-eslint/no-base-to-string': 'off',
    },
  },
  {
    files: ['test/**/*.ts', 'bench/**/*.ts', 'demo/**/*.ts'],
    rules: {
      // Tests and benchmarks walk parsed JSON (JSON.parse, collector output, child-process
      // reports), which TypeScript types as `any`; a wrong shape fails the assertion that reads
      // it, so typing every intermediate value would add casts without catching anything.
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
    },
  },
);
