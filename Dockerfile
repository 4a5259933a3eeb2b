# One image for both services of docker-compose.yml: the trainer and syncd.
FROM python:3.11-slim
WORKDIR /app
# torch first and pinned to the CPU build; GPU hosts swap in their own wheel.
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY syncd syncd
COPY trainer trainer
RUN pip install --no-cache-dir '.[train,s3]'
COPY configs configs
COPY data data
