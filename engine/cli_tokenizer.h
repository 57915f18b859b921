/* engine/cli_tokenizer.h — aha-engine's tokenizer commands (tokenize,
 * detokenize, chat-template). Each takes the command's own argv (argv[0] is
 * the command name) and returns the process exit code. */
#ifndef AHA_CLI_TOKENIZER_H
#define AHA_CLI_TOKENIZER_H

int cli_tokenize(int argc, char **argv);
int cli_detokenize(int argc, char **argv);
int cli_chat_template(int argc, char **argv);

#endif
